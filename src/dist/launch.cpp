#include "dist/launch.h"

#include <cstdlib>

#include "core/error.h"
#include "dist/local_comm.h"
#ifdef SPEEDRUN_HAVE_MPI
#include "dist/mpi/mpi_comm.h"
#endif
#ifdef SPEEDRUN_HAVE_NCCL
#include "dist/nccl/nccl_comm.h"
#endif

namespace speedrun {

namespace {
// The integer in environment variable `name`, or `fallback` when unset or not a number.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return *end == '\0' ? int(x) : fallback;
}
}  // namespace

LaunchInfo detect_launch() {
  LaunchInfo l;
  if (env_int("OMPI_COMM_WORLD_SIZE", 0) > 0) {
    l.launcher = "mpirun";
    l.world = env_int("OMPI_COMM_WORLD_SIZE", 1);
    l.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    l.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  } else if (env_int("SLURM_NTASKS", 0) > 1 && std::getenv("SLURM_PROCID")) {
    l.launcher = "srun";
    l.world = env_int("SLURM_NTASKS", 1);
    l.rank = env_int("SLURM_PROCID", 0);
    l.local_rank = env_int("SLURM_LOCALID", 0);
  } else if (env_int("PMI_SIZE", 0) > 0) {
    l.launcher = "PMI";
    l.world = env_int("PMI_SIZE", 1);
    l.rank = env_int("PMI_RANK", 0);
    l.local_rank = env_int("MPI_LOCALRANKID", 0);
  }
  return l;
}

bool mpi_built() {
#ifdef SPEEDRUN_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_built() {
#ifdef SPEEDRUN_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Comm> make_comm(const LaunchInfo& launch, Backend& backend) {
  if (launch.world <= 1) return std::make_unique<LocalComm>(&backend);
#ifdef SPEEDRUN_HAVE_MPI
  if (backend.device() == Device::CPU) return std::make_unique<MpiComm>();
#ifdef SPEEDRUN_HAVE_NCCL
  return std::make_unique<NcclComm>(backend, std::make_unique<MpiComm>());
#else
  fail("rank ", launch.rank, " of ", launch.world, ": training on ", backend.name(),
       " over several processes needs NCCL, which this build lacks (it is part of the CUDA "
       "toolkit: rebuild where nccl.h is found), or use --device cpu");
#endif
#endif
  fail("this process is rank ", launch.rank, " of ", launch.world, " started by ",
       launch.launcher, ", but this build of speedrun has no multi-process communicator, so "
       "the ranks would train as independent copies on slices of the data: run a single "
       "process, or install OpenMPI (libopenmpi-dev) and rebuild");
}

void end_job_runtime() {
#ifdef SPEEDRUN_HAVE_MPI
  end_mpi();
#endif
}

}  // namespace speedrun
