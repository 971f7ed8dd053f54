#ifndef AGENT_SERVICE_CPOSTGRES_SHIM_H
#define AGENT_SERVICE_CPOSTGRES_SHIM_H
#include <libpq-fe.h>
#endif
