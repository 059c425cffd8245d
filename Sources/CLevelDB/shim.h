// CLevelDB: the system LevelDB (libleveldb-dev) through its C API, for Data layers with
// `backend: LEVELDB` and `swiftjit convert-imageset --backend leveldb`.
#ifndef SWIFTJIT_CLEVELDB_SHIM_H
#define SWIFTJIT_CLEVELDB_SHIM_H
#include <leveldb/c.h>
#endif
