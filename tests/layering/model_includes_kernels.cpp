// Must build: the allowed arrow model -> kernels -> core (control case).
#include "rmoe/kernels/ops.h"
#include "rmoe/model/model.h"
