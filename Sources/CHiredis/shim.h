#ifndef MARKOV_CHIREDIS_SHIM_H
#define MARKOV_CHIREDIS_SHIM_H
// Only the reply reader is used: connections and I/O belong to SwiftNIO.
#include <hiredis/read.h>
#include <hiredis/hiredis.h>
#endif
