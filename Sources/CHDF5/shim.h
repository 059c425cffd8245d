// CHDF5: the system HDF5 (libhdf5-dev, serial) for HDF5Data and HDF5Output layers.
// HDF5's type and property constants are macros Swift cannot import, so the few calls the
// DataPipeline makes are wrapped here: open/create a file, describe a dataset, read it as float,
// write a float dataset. Every function returns a negative value on failure and prints nothing
// (the automatic error stack printing is switched off by swiftjit_h5_quiet).
#ifndef SWIFTJIT_CHDF5_SHIM_H
#define SWIFTJIT_CHDF5_SHIM_H
#include <hdf5.h>

#define SWIFTJIT_H5_MAX_RANK 32

/// Class codes for swiftjit_h5_describe (H5T_class_t values are not stable across versions).
enum { SWIFTJIT_H5_FLOAT = 0, SWIFTJIT_H5_INTEGER = 1, SWIFTJIT_H5_OTHER = 2 };

static inline void swiftjit_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static inline hid_t swiftjit_h5_open_read(const char *path) {
    swiftjit_h5_quiet();
    return H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
}

/// Opens `count` bytes held in memory as a read-only HDF5 file (the core driver over a copy of
/// them, no backing file): what a file would read as, without touching the disk.
static inline hid_t swiftjit_h5_open_image(const void *bytes, size_t count) {
    swiftjit_h5_quiet();
    // With no image the core driver would read a file of that name from the disk instead.
    if (bytes == NULL || count == 0) return -1;
    hid_t access = H5Pcreate(H5P_FILE_ACCESS);
    if (access < 0) return -1;
    hid_t file = -1;
    if (H5Pset_fapl_core(access, 64 * 1024, 0) >= 0 && H5Pset_file_image(access, (void *)bytes, count) >= 0)
        file = H5Fopen("in-memory.h5", H5F_ACC_RDONLY, access);
    H5Pclose(access);
    return file;
}

static inline hid_t swiftjit_h5_create(const char *path) {
    swiftjit_h5_quiet();
    return H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

static inline int swiftjit_h5_close(hid_t file) { return H5Fclose(file) < 0 ? -1 : 0; }

/// 1 when `name` is a dataset at the root of `file`, 0 when absent, -1 on error.
static inline int swiftjit_h5_has_dataset(hid_t file, const char *name) {
    htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
    if (exists <= 0) return exists < 0 ? -1 : 0;
    H5O_info_t info;
#if H5_VERSION_GE(1, 12, 0)
    if (H5Oget_info_by_name3(file, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return -1;
#else
    if (H5Oget_info_by_name(file, name, &info, H5P_DEFAULT) < 0) return -1;
#endif
    return info.type == H5O_TYPE_DATASET ? 1 : 0;
}

/// The rank, extents and element class of dataset `name`; 0 on success.
static inline int swiftjit_h5_describe(hid_t file, const char *name, int *rank, long long *dims, int *klass) {
    hid_t set = H5Dopen2(file, name, H5P_DEFAULT);
    if (set < 0) return -1;
    hid_t space = H5Dget_space(set);
    hid_t type = H5Dget_type(set);
    int status = -1;
    if (space >= 0 && type >= 0) {
        int n = H5Sget_simple_extent_ndims(space);
        if (n >= 0 && n <= SWIFTJIT_H5_MAX_RANK) {
            hsize_t extents[SWIFTJIT_H5_MAX_RANK];
            if (H5Sget_simple_extent_dims(space, extents, NULL) >= 0) {
                *rank = n;
                for (int i = 0; i < n; i++) dims[i] = (long long)extents[i];
                H5T_class_t c = H5Tget_class(type);
                *klass = c == H5T_FLOAT ? SWIFTJIT_H5_FLOAT : (c == H5T_INTEGER ? SWIFTJIT_H5_INTEGER : SWIFTJIT_H5_OTHER);
                status = 0;
            }
        }
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(set);
    return status;
}

/// Reads all of dataset `name` into `out` as native floats (HDF5 converts from any numeric type).
static inline int swiftjit_h5_read_float(hid_t file, const char *name, float *out) {
    hid_t set = H5Dopen2(file, name, H5P_DEFAULT);
    if (set < 0) return -1;
    herr_t status = H5Dread(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(set);
    return status < 0 ? -1 : 0;
}

/// Writes `data` as a new float dataset `name` shaped `dims`.
static inline int swiftjit_h5_write_float(hid_t file, const char *name, int rank, const long long *dims, const float *data) {
    if (rank < 0 || rank > SWIFTJIT_H5_MAX_RANK) return -1;
    hsize_t extents[SWIFTJIT_H5_MAX_RANK];
    for (int i = 0; i < rank; i++) extents[i] = (hsize_t)dims[i];
    hid_t space = H5Screate_simple(rank, extents, NULL);
    if (space < 0) return -1;
    hid_t set = H5Dcreate2(file, name, H5T_NATIVE_FLOAT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int status = -1;
    if (set >= 0) {
        status = H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
        H5Dclose(set);
    }
    H5Sclose(space);
    return status;
}
#endif
