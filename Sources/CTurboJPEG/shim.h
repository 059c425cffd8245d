// CTurboJPEG: the system libjpeg-turbo TurboJPEG API (libturbojpeg0-dev), used by DataPipeline to
// decode JPEG-encoded Datums. TurboJPEG reports errors as return codes, so no wrapper is needed.
#ifndef SWIFTJIT_CTURBOJPEG_SHIM_H
#define SWIFTJIT_CTURBOJPEG_SHIM_H
#include <turbojpeg.h>
#endif
