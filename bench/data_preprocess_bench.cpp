// Preprocessing throughput: `kiln preprocess`'s code path (read, tokenize a slice per rank, merge,
// write the HDF5 store) of the lm method's store on a plain-text corpus, one document per line. Run it under mpirun with 1
// and with 2 ranks; bench/data_preprocess.sh does both and times sentencepiece's own spm_encode on
// the same text beside it. Prints figures; asserts nothing.
//   data_preprocess_bench <tokenizer folder or .model> <text file> [repeats]
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"
#include "methods/registry.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 3) {
    if (rank == 0) std::fprintf(stderr, "usage: %s <tokenizer> <text file> [repeats]\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  std::string store = (std::filesystem::temp_directory_path() / "kiln_bench_data_store").string();
  std::string yaml = std::string("name: bench\nmodel:\n  path: ") + argv[1] + "\ndata:\n  format: text\n  train: " +
                     argv[2] + "\n  max_len: 2048\n  store_dir: " + store + "\n";
  try {
    kiln::Recipe r = kiln::read_recipe_tree(kiln::recipe::parse_string(yaml, "bench.yaml"), "bench.yaml");
    kiln::data::Tokenizer tok(r.model.path);
    auto enc = kiln::methods::make_task(r)->encoder(r);  // lm's: text packed into windows
    kiln::data::Parallel par{rank, size, [] { MPI_Barrier(MPI_COMM_WORLD); }};
    double best = 1e30, best_tok = 1e30;
    int64_t tokens = 0;
    for (int i = 0; i < repeats; ++i) {
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = std::chrono::steady_clock::now();
      auto sums = kiln::data::preprocess(r, *enc, tok, par);
      MPI_Barrier(MPI_COMM_WORLD);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // The slowest rank's tokenization: what the ranks take in parallel.
      double tk = sums[0].tokenize_seconds, tk_max = 0;
      MPI_Allreduce(&tk, &tk_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      best = std::min(best, s);
      best_tok = std::min(best_tok, tk_max);
      tokens = sums[0].tokens;
    }
    if (rank == 0)
      std::printf("ranks %d  tokens %lld  end-to-end %.3f s = %.0f tokens/s  tokenize only %.3f s = %.0f tokens/s  "
                  "(best of %d)\n",
                  size, (long long)tokens, best, double(tokens) / best, best_tok, double(tokens) / best_tok, repeats);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, e.exit_code());
  }
  MPI_Finalize();
  return 0;
}
