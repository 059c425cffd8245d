// CZlib: the system zlib (zlib1g-dev), used by the NumPy target for raw-DEFLATE
// inflation of .npz members and CRC-32.
#ifndef SWIFTJIT_CZLIB_SHIM_H
#define SWIFTJIT_CZLIB_SHIM_H
#include <zlib.h>
#endif
