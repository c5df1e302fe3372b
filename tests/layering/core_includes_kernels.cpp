// Must NOT build: core is the bottom layer.
#include "rmoe/kernels/ops.h"
