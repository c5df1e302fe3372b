// Must NOT build: model knows nothing of communicators.
#include "rmoe/parallel/comm.h"
