/// ENet's `DenseImageData` label size, one check shared by the shape rule (Graph) and the data
/// reader (DataPipeline) so the label top and the labels read always agree.
extension Caffe_LayerParameter {
    /// ENet's `label_divide_factor`, checked: at least 1 (the fork divides by it); above 1 it
    /// needs `new_height`/`new_width` no smaller than itself (the fork resizes the label to
    /// `new_height / f × new_width / f` and reads it unresized otherwise, which its label top of
    /// ⌊H/f⌋ × ⌊W/f⌋ cannot hold) and no cropping (the fork cuts the small label with the image's
    /// window). The shape rule and the data reader share this check.
    public func checkedLabelDivideFactor() throws -> Int {
        let p = denseImageDataParam, factor = Int(p.labelDivideFactor)
        guard factor >= 1 else {
            throw Diagnostic("DenseImageData label_divide_factor is 0; it must be at least 1", layer: name,
                             hint: "use 1 for full-size labels, or the encoder's downsampling (8 in ENet's encoder net)")
        }
        guard factor > 1 else { return 1 }
        guard p.newHeight > 0, p.newWidth > 0 else {
            throw Diagnostic("DenseImageData label_divide_factor \(factor) needs new_height and new_width (the label is resized to new_height/\(factor) × new_width/\(factor))",
                             layer: name, hint: "set new_height and new_width in dense_image_data_param, as ENet's encoder net does (512, 1024)")
        }
        guard Int(p.newHeight) >= factor, Int(p.newWidth) >= factor else {
            throw Diagnostic("DenseImageData label_divide_factor \(factor) exceeds new_height × new_width \(p.newHeight)×\(p.newWidth): the labels would be empty",
                             layer: name, hint: "use a factor no larger than the resized image's sides")
        }
        guard p.cropHeight == 0, transformParam.cropSize == 0 else {
            throw Diagnostic("DenseImageData cannot crop with label_divide_factor \(factor): the window is cut at the image's size from a label \(factor) times smaller",
                             layer: name, hint: "drop crop_height/crop_width (or crop_size), or use label_divide_factor: 1")
        }
        return factor
    }
}
