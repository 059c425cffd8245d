import Testing
@testable import Serve

/// Triton's config.pbtxt: the fields the server honours, and a warning for each one it does not.
@Suite("config.pbtxt")
struct ModelConfigurationTests {
    @Test("max_batch_size, dynamic batching, instance groups and dims are read; other fields are named in warnings")
    func honouredFields() throws {
        let text = """
        name: "squeezenet"  # the folder's name wins anyway
        platform: "caffe"
        max_batch_size: 16
        dynamic_batching {
          preferred_batch_size: [ 4, 8 ]
          max_queue_delay_microseconds: 500
          preserve_ordering: true
        }
        instance_group [ { count: 2 kind: KIND_CPU } ]
        input [ { name: "data" data_type: TYPE_FP32 dims: [ 3, 227, 227 ] } ]
        output [ { name: "prob", data_type: TYPE_FP32, dims: [ 1000, 1, 1 ] } ]
        optimization { execution_accelerators { cpu_execution_accelerator : [ { name : "openvino" } ] } }
        """
        let configuration = try ModelConfiguration.parse(text)
        #expect(configuration.name == "squeezenet")
        #expect(configuration.maxBatchSize == 16)
        #expect(configuration.dynamicBatching == .init(maxQueueDelayMicroseconds: 500, preferredBatchSizes: [4, 8]))
        #expect(configuration.instanceCount == 2)
        #expect(configuration.inputs == [.init(name: "data", dataType: "TYPE_FP32", dims: [3, 227, 227])])
        #expect(configuration.outputs == [.init(name: "prob", dataType: "TYPE_FP32", dims: [1000, 1, 1])])
        #expect(configuration.warnings.count == 2)
        #expect(configuration.warnings.contains { $0.contains("dynamic_batching.preserve_ordering") })
        #expect(configuration.warnings.contains { $0.contains("optimization") })
    }

    @Test("no dynamic_batching block means each request runs alone")
    func noDynamicBatching() throws {
        let configuration = try ModelConfiguration.parse("max_batch_size: 4")
        #expect(configuration.dynamicBatching == nil)
        #expect(BatchPolicy(maxBatchSize: 4, dynamic: false).batchSizes == [1])
    }

    @Test("errors give the file and line")
    func errors() {
        for (text, phrase) in [("max_batch_size: eight", "config.pbtxt:1: max_batch_size must be an integer"),
                               ("dynamic_batching {\n preferred_batch_size: 4\n", "expected '}'"),
                               ("max_batch_size: 2\ndynamic_batching { preferred_batch_size: 4 }", "exceeds max_batch_size 2"),
                               ("instance_group [ { count: 0 } ]", "count must be positive")] {
            do {
                _ = try ModelConfiguration.parse(text)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.message.contains(phrase), "\(error.message)")
            }
        }
    }

    @Test("the batcher forms powers of two, the preferred sizes and the maximum")
    func batchSizes() {
        #expect(BatchPolicy(maxBatchSize: 12, dynamic: true, preferredBatchSizes: [6]).batchSizes == [1, 2, 4, 6, 8, 12])
        #expect(BatchPolicy(maxBatchSize: 0, dynamic: true).batchSizes == [])
    }
}
