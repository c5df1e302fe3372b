// Must NOT build: data sits below train.
#include "rmoe/train/config.h"
