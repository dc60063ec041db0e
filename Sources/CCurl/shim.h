#ifndef MARKOV_CCURL_SHIM_H
#define MARKOV_CCURL_SHIM_H
#include <curl/curl.h>
#endif
