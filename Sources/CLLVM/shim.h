// The LLVM C API that Codegen uses: IR building, ORC LLJIT, host target, verification, new pass manager,
// object emission, command-line options, and the library version (llvm-config.h is plain C macros).
// IRReader.h and Linker.h to link kernels' IR into one module (`compile --emit llvm`).
// Object.h to read kernels' symbol sizes for the perf map (`PerfMap`).
// DebugInfo.h only for temporary metadata nodes (a loop ID refers to itself).
#include <llvm-c/Core.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Error.h>
#include <llvm-c/IRReader.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Object.h>
#include <llvm-c/Support.h>
#include <llvm/Config/llvm-config.h>
#include <llvm-c/Transforms/PassBuilder.h>
