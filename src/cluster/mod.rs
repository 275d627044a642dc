//! Several hosts as one cache (DESIGN.md "Cluster"): the ketama ring that
//! places keys on nodes, the node list with who is alive, and forwarding of
//! requests to the node that acts for their keys.

pub mod ring;
