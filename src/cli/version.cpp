#include <hdf5.h>
#include <torch/version.h>

#include <iostream>

#include "cli/verbs.h"
#include "core/build_info.h"
#include "parallel/world.h"
#ifdef KILN_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace kiln::cli {

void add_version(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("version", "Print the versions of kiln and the libraries it was built with");
  sub->callback([&action] {
    action = [] {
      std::string mpi_line = parallel::mpi_library_version();
      unsigned maj, min, rel;
      H5get_libversion(&maj, &min, &rel);
      std::cout << "kiln " << KILN_VERSION << " (commit " << git_commit() << ")\n"
                << "libtorch " << TORCH_VERSION << "\n"
                << "MPI " << mpi_line << "\n"
                << "HDF5 " << maj << "." << min << "." << rel << "\n"
                << "sentencepiece " << KILN_SENTENCEPIECE_VERSION << "\n"
                << "yaml-cpp " << KILN_YAML_CPP_VERSION << "\n";
#ifdef KILN_WITH_CUDA
      int rt = 0, nccl = 0;
      cudaRuntimeGetVersion(&rt);
      ncclGetVersion(&nccl);
      std::cout << "CUDA runtime " << rt / 1000 << "." << (rt % 1000) / 10 << "\n"
                << "NCCL " << nccl / 10000 << "." << (nccl % 10000) / 100 << "." << nccl % 100 << "\n";
#else
      std::cout << "CUDA/NCCL not built (-DKILN_CUDA=OFF, no CUDA toolkit found, or a CPU-only libtorch)\n";
#endif
      return 0;
    };
  });
}

}  // namespace kiln::cli
