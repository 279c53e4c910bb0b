// How this process was started: alone, or as one rank of a job a launcher started (mpirun
// and OpenMPI's variables, Slurm's srun, PMI), read from the environment. make_comm builds
// the Comm for it; a job of several ranks in a build without a multi-process Comm is
// refused with a message saying so, never trained as independent copies on partial data.
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"
#include "dist/comm.h"

namespace speedrun {

struct LaunchInfo {
  int rank = 0, world = 1, local_rank = 0;
  std::string launcher;  // "" when started alone, else "mpirun", "srun" or "PMI"
};

LaunchInfo detect_launch();

// Whether this build has the MPI communicator (CPU buffers) and the NCCL one (GPU buffers).
bool mpi_built();
bool nccl_built();

// The Comm of this process: LocalComm when it runs alone; over several processes MpiComm
// for the CPU backend and NcclComm for a GPU backend.
std::unique_ptr<Comm> make_comm(const LaunchInfo& launch, Backend& backend);

// Ends what make_comm started that outlives its Comm (MPI), now rather than at exit: it
// waits for every rank, so a job ends it where a watchdog watches the wait. Call after
// the Comm is gone; nothing when this process runs alone.
void end_job_runtime();

}  // namespace speedrun
