// mimalloc (Debian's libmimalloc2.0, built to override malloc): linking it into the executable makes it the
// allocator of the whole process, the Swift runtime included. See README, "Memory allocator".
#include <mimalloc.h>
