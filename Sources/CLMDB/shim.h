// CLMDB: the system LMDB (liblmdb-dev), read by the DataPipeline target's LMDBReader.
#ifndef SWIFTJIT_CLMDB_SHIM_H
#define SWIFTJIT_CLMDB_SHIM_H
#include <lmdb.h>
#endif
