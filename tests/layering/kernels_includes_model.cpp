// Must NOT build: kernels sit below model (docs/ARCHITECTURE.md).
#include "rmoe/model/model.h"
