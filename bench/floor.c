/*
 * The FastCGI floor for `make bench`: the least a responder can do on this transport.
 * libfcgi's threaded API, FLOOR_THREADS threads (default 64) each accepting on the listening
 * socket spawn-fcgi hands over as fd 0, reading the whole body and answering a fixed JSON body.
 * Nothing a responder that does real work can beat.
 *
 * Its strongest configuration: nginx keeps its connections (`fastcgi_keep_conn on`) and there
 * are at least as many threads as kept connections, since each kept connection pins a thread
 * between requests (with fewer threads, requests wait on connections no thread is serving).
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>


static const char reply[] =
    "Status: 200 OK\r\nContent-Type: application/json\r\nContent-Length: 139\r\n\r\n"
    "{\"status\":\"succeeded\",\"results\":[{\"id\":\"a\",\"status\":\"succeeded\",\"output\":{\"x\":1},"
    "\"duration_ms\":0.001}],\"summary\":{\"total\":1,\"succeeded\":1}}";

static void *serve(void *unused) {
    (void)unused;
    FCGX_Request request;
    char buffer[65536];
    FCGX_InitRequest(&request, 0, 0);
    while (FCGX_Accept_r(&request) == 0) {
        while (FCGX_GetStr(buffer, sizeof buffer, request.in) > 0) {
        }
        FCGX_PutStr(reply, sizeof reply - 1, request.out);
        FCGX_Finish_r(&request);
    }
    return NULL;
}

int main(void) {
    const char *setting = getenv("FLOOR_THREADS");
    int count = setting ? atoi(setting) : 64;
    if (count < 1 || count > 1024) count = 64;
    pthread_t *threads = calloc((size_t)count, sizeof *threads);
    FCGX_Init();
    for (int i = 0; i < count; i++) pthread_create(&threads[i], NULL, serve, NULL);
    for (int i = 0; i < count; i++) pthread_join(threads[i], NULL);
    free(threads);
    return 0;
}
