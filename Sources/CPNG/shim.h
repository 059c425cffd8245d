// CPNG: the system libpng (libpng-dev), used by DataPipeline to decode PNG-encoded Datums.
//
// libpng reports errors by longjmp, which Swift cannot catch, so the one function below owns the
// setjmp and returns a status code instead. It applies exactly the transformations OpenCV's PNG
// decoder applies for imdecode(IMREAD_UNCHANGED / IMREAD_COLOR / IMREAD_GRAYSCALE), so pixels match
// what Caffe sees: BGR order, alpha stripped unless 4 channels are kept, 16 bits stripped to 8,
// and colour to grey with libpng's fixed-point 0.299/0.587/0.114 weights.
#ifndef SWIFTJIT_CPNG_SHIM_H
#define SWIFTJIT_CPNG_SHIM_H
#include <png.h>
#include <stdlib.h>
#include <string.h>

enum {
    SWIFTJIT_PNG_NATIVE = 0,  // IMREAD_UNCHANGED: channels as stored (1, 3 or 4)
    SWIFTJIT_PNG_COLOR = 1,   // IMREAD_COLOR: 3 channels, BGR
    SWIFTJIT_PNG_GRAY = 2,    // IMREAD_GRAYSCALE: 1 channel
};

enum {
    SWIFTJIT_PNG_OK = 0,
    SWIFTJIT_PNG_ERROR = 1,          // libpng rejected the data; see message
    SWIFTJIT_PNG_SIXTEEN_BIT = 2,    // a 16-bit image asked for natively (Caffe needs 8 bits)
    SWIFTJIT_PNG_TOO_LARGE = 3,      // more pixels than a Datum can describe
};

typedef struct {
    const unsigned char *bytes;
    size_t size;
    size_t offset;
} swiftjit_png_source;

static inline void swiftjit_png_read_bytes(png_structp png, png_bytep out, size_t count) {
    swiftjit_png_source *source = (swiftjit_png_source *)png_get_io_ptr(png);
    if (source->size - source->offset < count) png_error(png, "the PNG data ends early (truncated)");
    memcpy(out, source->bytes + source->offset, count);
    source->offset += count;
}

static inline void swiftjit_png_fail(png_structp png, png_const_charp text) {
    char *message = (char *)png_get_error_ptr(png);
    strncpy(message, text, 255);
    message[255] = 0;
    png_longjmp(png, 1);
}

static inline void swiftjit_png_ignore_warning(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

/// Decodes a PNG held in memory. On success, *pixels is malloc'd (free it with free()), rows are
/// packed (width * channels bytes) with channels interleaved. `message` receives libpng's error.
static inline int swiftjit_png_decode(const unsigned char *bytes, size_t size, int mode,
                                      unsigned char **pixels_out, int *channels_out,
                                      int *height_out, int *width_out, char message[256]) {
    swiftjit_png_source source = {bytes, size, 0};
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    volatile int status = SWIFTJIT_PNG_ERROR;
    message[0] = 0;
    *pixels_out = NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, swiftjit_png_fail,
                                             swiftjit_png_ignore_warning);
    if (!png) {
        strcpy(message, "libpng could not allocate a reader");
        return SWIFTJIT_PNG_ERROR;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        strcpy(message, "libpng could not allocate a reader");
        return SWIFTJIT_PNG_ERROR;
    }
    if (setjmp(png_jmpbuf(png))) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return status;
    }
    png_set_read_fn(png, &source, swiftjit_png_read_bytes);
    png_read_info(png, info);
    png_uint_32 width = 0, height = 0;
    int depth = 0, color_type = 0;
    png_get_IHDR(png, info, &width, &height, &depth, &color_type, NULL, NULL, NULL);

    int channels;
    if (mode == SWIFTJIT_PNG_NATIVE) {
        // OpenCV's PngDecoder::readHeader: palette/RGB with a tRNS chunk and any alpha type → 4.
        switch (color_type) {
        case PNG_COLOR_TYPE_RGB:
        case PNG_COLOR_TYPE_PALETTE:
            channels = png_get_valid(png, info, PNG_INFO_tRNS) ? 4 : 3;
            break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
        case PNG_COLOR_TYPE_RGB_ALPHA:
            channels = 4;
            break;
        default:
            channels = 1;
        }
        if (depth == 16) {
            status = SWIFTJIT_PNG_SIXTEEN_BIT;
            png_error(png, "16-bit PNG");
        }
    } else {
        channels = mode == SWIFTJIT_PNG_COLOR ? 3 : 1;
    }
    if ((size_t)width * height * channels > (size_t)0x7fffffff) {
        status = SWIFTJIT_PNG_TOO_LARGE;
        png_error(png, "image too large");
    }
    // OpenCV's PngDecoder::readData, in its order.
    if (depth == 16) png_set_strip_16(png);
    if (channels < 4) png_set_strip_alpha(png);
    else png_set_tRNS_to_alpha(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((color_type & PNG_COLOR_MASK_COLOR) == 0 && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if ((color_type & PNG_COLOR_MASK_COLOR) && channels > 1) png_set_bgr(png);
    else if (channels > 1) png_set_gray_to_rgb(png);
    else png_set_rgb_to_gray(png, 1, 0.299, 0.587);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t row_bytes = png_get_rowbytes(png, info);
    if (row_bytes != (size_t)width * channels) png_error(png, "unexpected row layout after conversion");
    pixels = (unsigned char *)malloc(row_bytes * height + 1);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (height + 1));
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = pixels + y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *pixels_out = pixels;
    *channels_out = channels;
    *height_out = (int)height;
    *width_out = (int)width;
    return SWIFTJIT_PNG_OK;
}

#endif
