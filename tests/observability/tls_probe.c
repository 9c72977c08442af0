/* Preloaded into skipserve-server by metrics_stack_headroom_test.py: 1 KiB
 * of static thread-local storage, which glibc carves out of every thread's
 * stack, as any linked library's or our own thread_local variables do. */
__thread char skipserve_tls_probe[1024];

char* skipserve_tls_probe_address(void) { return skipserve_tls_probe; }
