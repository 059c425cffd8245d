"""The C API as a C program uses it: Examples/c/classify.c and Tests/c/api_test.c are compiled with
`cc` against include/swiftjit.h and .build/release/libswiftjit.so (built by tools/build-c-library.sh)
and run without LD_LIBRARY_PATH."""
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / ".build" / "release"
LENET = ROOT / "Examples" / "lenet" / "lenet.prototxt"
SWIFTJIT = RELEASE / "swiftjit"


def environment():
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    return env


def compile_c(source, output, *flags):
    library = RELEASE / "libswiftjit.so"
    assert library.exists(), f"{library} is missing: run tools/build-c-library.sh"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", *flags, "-I", str(ROOT / "include"),
                    str(source), "-L", str(RELEASE), "-lswiftjit", "-lpthread", "-o", str(output)], check=True)
    return output


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def lenet_weights(work):
    path = work / "lenet.caffemodel"
    subprocess.run([str(SWIFTJIT), "init", str(LENET), "--seed", "7", "-o", str(path)], check=True, capture_output=True)
    return path


def parse_classify(text):
    """{output name: (shape, float32 values)} from classify's printout."""
    outputs, name = {}, None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.split()
        if head[0][0].isalpha() and len(head) == 2:
            name = head[0]
            outputs[name] = ([int(d) for d in head[1].split("x")], [])
        else:
            outputs[name][1].append(np.float32(float(line)))
    return {k: (shape, np.array(v, dtype=np.float32)) for k, (shape, v) in outputs.items()}


def test_classify_prints_what_swiftjit_run_computes_bit_for_bit(work, lenet_weights):
    classify = compile_c(ROOT / "Examples" / "c" / "classify.c", work / "classify")
    x = work / "x.npy"
    printed = subprocess.run([str(classify), str(LENET), str(lenet_weights), "--save-input", str(x)], check=True,
                             capture_output=True, text=True, env=environment()).stdout
    ours = parse_classify(printed)
    assert list(ours) == ["prob"]
    shape, values = ours["prob"]
    assert shape == [64, 10]
    out = work / "out.npz"
    subprocess.run([str(SWIFTJIT), "run", str(LENET), "--weights", str(lenet_weights), "--input", f"data={x}", "-o", str(out)],
                   check=True, capture_output=True)
    expected = np.load(out)["prob"]
    assert expected.shape == (64, 10)
    assert np.array_equal(values.view(np.uint32), expected.reshape(-1).view(np.uint32)), "classify and swiftjit run differ"
    # The saved input is what a second run with --input reads back: the same printout.
    again = subprocess.run([str(classify), str(LENET), str(lenet_weights), "--input", str(x)], check=True,
                           capture_output=True, text=True, env=environment()).stdout
    assert again == printed
    # Rows are distributions over ten classes.
    assert np.allclose(expected.sum(axis=1), 1, atol=1e-5)


def test_classify_reports_errors_in_one_line(work):
    classify = compile_c(ROOT / "Examples" / "c" / "classify.c", work / "classify")
    broken = work / "broken.prototxt"
    broken.write_text("layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 3 } } }\n"
                      "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip' inner_product_param { num_outputs: 4 } }\n")
    result = subprocess.run([str(classify), str(broken)], capture_output=True, text=True, env=environment())
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {broken}:2:")
    assert "num_output" in result.stderr  # the did-you-mean names the real field


def test_one_model_eight_threads_a_session_each(work):
    program = compile_c(ROOT / "Tests" / "c" / "api_test.c", work / "api_test")
    result = subprocess.run([str(program), str(LENET), "8", "100"], capture_output=True, text=True, env=environment(), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 threads x 100 runs" in result.stdout and "all equal" in result.stdout
    for check in ["wrong input shape", "unknown input name", "unknown output name", "NULL session", "missing prototxt",
                  "malformed prototxt in memory"]:
        assert f"ok: {check} ->" in result.stdout
