// cuBLASLt opened when the CUDA backend first calls it, not when a process starts.
//
// libcublasLt's static initialisers take ~0.3 s of every process that links it (measured:
// an empty program 7 ms, the same linked with -lcublasLt 348 ms; docs/CUDA.md). Linked
// into speedrun_lib, that was paid by every `speedrun` command and every test process,
// on a CPU as well. So nothing links it: cublaslt_loader.cpp defines the cuBLASLt functions
// the backend calls, with the header's own signatures (a mismatch does not compile), each
// forwarding to the library's, found with dlopen/dlsym on first use. In the emulated build
// the emulator defines them instead (emulator/), and this file's functions do not exist.
#pragma once
#include <string>
#include <vector>

namespace speedrun::cuda {

// The file names tried for cuBLASLt, in order: its soname (found as the loader finds any
// library: LD_LIBRARY_PATH, the loader cache, the executable's RUNPATH), then that name in
// the folder the build found the toolkit's libraries in (not in the portable build, whose
// binaries must hold no path of the machine that built them).
std::vector<std::string> cublaslt_candidates();

// dlopen()s the first of `names` that opens and returns its handle; throws a
// speedrun::Error naming `what`, what `needs` it, every name tried with the loader's
// reason, and the fix.
void* open_first_library(const std::vector<std::string>& names, const std::string& what,
                         const std::string& needs = "the CUDA backend");

// The function `name` of an opened library (handle), or a speedrun::Error naming it, the
// `library` and the loader's reason, then `fix`.
void* library_symbol(void* handle, const char* name, const std::string& library,
                     const std::string& fix);

// Whether this process has opened cuBLASLt (for tests: CPU-only processes must not).
bool cublaslt_opened();

}  // namespace speedrun::cuda
