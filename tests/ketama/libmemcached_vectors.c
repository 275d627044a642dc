/* Prints, for each node list, the server index libmemcached's weighted
 * ketama picks for key:0 .. key:N-1. Builds with libmemcached-dev:
 *   cc -o /tmp/lmv libmemcached_vectors.c -lmemcached && /tmp/lmv 200
 * The output is what src/cluster/ring.rs's tests hold. */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { const char *host; in_port_t port; uint32_t weight; };

static void print_list(const char *name, const struct node *nodes, int count, int keys) {
    memcached_st *memc = memcached_create(NULL);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_HASH, MEMCACHED_HASH_MD5);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_HASH, MEMCACHED_HASH_MD5);
    for (int i = 0; i < count; i++)
        memcached_server_add_with_weight(memc, nodes[i].host, nodes[i].port, nodes[i].weight);
    printf("%s ", name);
    char key[32];
    for (int i = 0; i < keys; i++) {
        int len = snprintf(key, sizeof key, "key:%d", i);
        printf("%u", memcached_generate_hash(memc, key, (size_t)len));
    }
    printf("\n");
    memcached_free(memc);
}

int main(int argc, char **argv) {
    int keys = argc > 1 ? atoi(argv[1]) : 200;
    const struct node equal[] = {{"127.0.0.1", 11211, 1}, {"127.0.0.2", 21211, 1}, {"127.0.0.3", 21211, 1}};
    const struct node weighted[] = {{"10.0.0.1", 11211, 1}, {"10.0.0.2", 11212, 2}, {"10.0.0.3", 11213, 3}, {"10.0.0.4", 11214, 5}};
    print_list("equal", equal, 3, keys);
    print_list("weighted", weighted, 4, keys);
    return 0;
}
