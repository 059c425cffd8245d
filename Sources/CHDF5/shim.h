// CHDF5: the system HDF5 (libhdf5-dev, serial) for HDF5Data and HDF5Output layers.
// HDF5's type and property constants are macros Swift cannot import, so the few calls the
// DataPipeline makes are wrapped here: open/create a file, describe a dataset, read it as float,
// write a float dataset. Every function returns a negative value on failure and prints nothing
// (the automatic error stack printing is switched off by swiftjit_h5_quiet).
#ifndef SWIFTJIT_CHDF5_SHIM_H
#define SWIFTJIT_CHDF5_SHIM_H
#include <hdf5.h>
#include <stdio.h>

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
    // libhdf5 takes a second open of a name that is still open for the same file, so each image
    // gets a name of its own.
    static unsigned long long opened = 0;
    char name[64];
    snprintf(name, sizeof name, "in-memory-%llu.h5", __atomic_fetch_add(&opened, 1, __ATOMIC_RELAXED));
    hid_t file = -1;
    if (H5Pset_fapl_core(access, 64 * 1024, 0) >= 0 && H5Pset_file_image(access, (void *)bytes, count) >= 0)
        file = H5Fopen(name, H5F_ACC_RDONLY, access);
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
                // Only the widths real files use: a damaged type of 244 bytes over a 4-byte fill
                // value made libhdf5 1.10.8 read past the fill value (heap overflow in H5Dread).
                H5T_class_t c = H5Tget_class(type);
                size_t width = H5Tget_size(type);
                int standard = c == H5T_FLOAT ? (width == 2 || width == 4 || width == 8)
                             : (width == 1 || width == 2 || width == 4 || width == 8);
                // And bits that lie inside the element: a 2-byte integer of precision 0 made
                // libhdf5's integer-to-float conversion read from a wild address (SIGBUS in
                // H5T__bit_copy).
                size_t precision = H5Tget_precision(type);
                int offset = H5Tget_offset(type);
                if (precision == 0 || offset < 0 || precision + (size_t)offset > 8 * width) standard = 0;
                *klass = !standard ? SWIFTJIT_H5_OTHER
                       : c == H5T_FLOAT ? SWIFTJIT_H5_FLOAT : (c == H5T_INTEGER ? SWIFTJIT_H5_INTEGER : SWIFTJIT_H5_OTHER);
                status = 0;
            }
        }
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(set);
    return status;
}

/// 1 when a compact or contiguous dataset stores fewer bytes than its extents need (or the sizes
/// cannot be read), 0 otherwise. libhdf5 1.10 does not check this for a damaged file and copies
/// from a NULL or short buffer in H5Dread (a compact dataset of 0 bytes declaring 2 floats
/// crashed it in H5VM_memcpyvv: Tests/Fuzz/regressions/hdf5). Chunked datasets may store less
/// (compression, unwritten chunks); unallocated ones read as the fill value.
static inline int swiftjit_h5_storage_short(hid_t set) {
    hid_t create = H5Dget_create_plist(set);
    if (create < 0) return 1;
    H5D_layout_t layout = H5Pget_layout(create);
    H5Pclose(create);
    if (layout != H5D_COMPACT && layout != H5D_CONTIGUOUS) return layout < 0;
    H5D_space_status_t allocation;
    if (H5Dget_space_status(set, &allocation) < 0) return 1;
    if (allocation == H5D_SPACE_STATUS_NOT_ALLOCATED) return 0;
    hid_t space = H5Dget_space(set), type = H5Dget_type(set);
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    size_t width = type >= 0 ? H5Tget_size(type) : 0;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (points < 0 || width == 0) return 1;
    unsigned long long needed;
    if (__builtin_mul_overflow((unsigned long long)points, (unsigned long long)width, &needed)) return 1;
    return H5Dget_storage_size(set) < needed;
}

/// Reads all of dataset `name` into `out` as native floats (HDF5 converts from any numeric type);
/// a compact or contiguous dataset storing fewer bytes than it declares is refused first.
static inline int swiftjit_h5_read_float(hid_t file, const char *name, float *out) {
    hid_t set = H5Dopen2(file, name, H5P_DEFAULT);
    if (set < 0) return -1;
    herr_t status = swiftjit_h5_storage_short(set) ? -1 : H5Dread(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
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
