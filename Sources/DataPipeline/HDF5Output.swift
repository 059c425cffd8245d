import CaffeFormat
import Foundation

/// Caffe's `HDF5Output` layer: on a forward pass it writes its first bottom as dataset `data` and
/// its second as `label` into `hdf5_output_param.file_name`, each reshaped to Caffe's legacy
/// 4-D blob (num, channels, height, width; missing axes are 1), as float32.
///
/// Caffe creates the file at set-up and saves one batch (a second forward fails there because the
/// datasets exist); here each forward writes the file anew with that pass's batch.
public enum HDF5OutputWriter {
    /// Writes `data` and `label` (shapes and values) for the layer; relative file names resolve
    /// against `baseDirectory`.
    public static func write(layer: Caffe_LayerParameter, data: HDF5Array, label: HDF5Array,
                             baseDirectory: String? = nil) throws {
        let fileName = layer.hdf5OutputParam.fileName
        guard !fileName.isEmpty else {
            throw Diagnostic("hdf5_output_param.file_name is empty", layer: layer.name, hint: "name the .h5 file to write")
        }
        guard data.shape.first == label.shape.first else {
            throw Diagnostic("data has \(data.shape.first ?? 0) rows but label has \(label.shape.first ?? 0)", layer: layer.name,
                             hint: "HDF5Output needs one label row per data row")
        }
        do {
            try HDF5File.write(path: resolve(fileName, against: baseDirectory),
                               datasets: [("data", try legacy(data, name: "data", layer: layer.name)),
                                          ("label", try legacy(label, name: "label", layer: layer.name))])
        } catch let diagnostic as Diagnostic {
            throw diagnostic.inLayer(layer.name)
        }
    }

    /// The array with Caffe's `Reshape(num, channels, height, width)`: missing axes are 1; Caffe's
    /// legacy accessors refuse blobs of more than four axes, and so does this.
    static func legacy(_ array: HDF5Array, name: String, layer: String) throws -> HDF5Array {
        guard array.shape.count <= 4 else {
            throw Diagnostic("bottom '\(name)' has \(array.shape.count) axes; HDF5Output writes blobs of at most 4", layer: layer,
                             hint: "reshape it to N×C×H×W first")
        }
        var shape = array.shape
        while shape.count < 4 { shape.append(1) }
        return HDF5Array(shape: shape, values: array.values)
    }
}
