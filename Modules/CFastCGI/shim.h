#ifndef FANOUT_CFASTCGI_SHIM_H
#define FANOUT_CFASTCGI_SHIM_H
// Only the multi-thread-safe FCGX_* API: fcgi_stdio.h swaps process-global
// state and cannot be used from threads.
#include <fcgiapp.h>
// The record layout, for writing large bodies as records of our own.
#include <fastcgi.h>
#endif
