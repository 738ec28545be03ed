// A 2-rank MPI program for the Slurm test: it proves that a launcher (srun --mpi=pmix, or mpirun
// inside an allocation) wires the ranks into one world before kiln, with its own failure modes, is
// involved. Each rank prints what MPI and the launcher told it; an all-reduce proves the ranks talk.
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

static const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "-";
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int local_rank = 0;
  MPI_Comm_rank(node, &local_rank);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  // Sum of (rank + 1) over all ranks: size * (size + 1) / 2 when every rank took part.
  int mine = rank + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  std::printf("hello rank=%d size=%d local_rank=%d host=%s sum=%d SLURM_PROCID=%s PMIX_RANK=%s OMPI_COMM_WORLD_RANK=%s\n",
              rank, size, local_rank, host, sum, env("SLURM_PROCID"), env("PMIX_RANK"),
              env("OMPI_COMM_WORLD_RANK"));
  std::fflush(stdout);
  MPI_Comm_free(&node);
  MPI_Finalize();
  return sum == size * (size + 1) / 2 ? 0 : 1;
}
