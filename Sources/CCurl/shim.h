#ifndef AGENT_SERVICE_CCURL_SHIM_H
#define AGENT_SERVICE_CCURL_SHIM_H
#include <curl/curl.h>
#endif
