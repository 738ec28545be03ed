// Run under mpirun -np 2: `preprocess` over 2 ranks must write the very bytes of a 1-rank run, for
// each kind of store (LS-LLaMA's and lm's, through their encoders), and an error on one rank's
// slice must reach both ranks instead of leaving one waiting at the barrier.
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <fstream>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "data/preprocess.h"
#include "data/store.h"
#include "data/tokenizer.h"
#include "methods/registry.h"

using namespace kiln::data;
namespace fs = std::filesystem;

namespace {

const std::string kShared = KILN_SHARED_DIR;
int g_rank = 0, g_size = 1;

void barrier() { MPI_Barrier(MPI_COMM_WORLD); }

kiln::Recipe recipe(const std::string& data_yaml, const std::string& store_dir) {
  std::string y = "name: t\nmodel:\n  path: " + kShared + "/models/llama2-tokenizer\ndata:\n  store_dir: " + store_dir +
                  "\n" + data_yaml;
  return kiln::read_recipe_tree(kiln::recipe::parse_string(y, "test.yaml"), "test.yaml");
}

// The recipe's data made by the method that makes such stores (lm for text, else ls_llama).
std::vector<SplitSummary> preprocess(const kiln::Recipe& r, const Tokenizer& tok, const Parallel& par = {}) {
  auto task = kiln::methods::make_task(r.data.format == "text" ? "lm" : "ls_llama");
  return kiln::data::preprocess(r, *task->encoder(r), tok, par);
}

// Preprocesses on all ranks, keeps the store as <dir>-np2, then again on rank 0 alone with the
// same recipe (the store records the recipe, store_dir included), and compares.
void same_bytes(const std::string& name, const std::string& data_yaml, const std::vector<std::string>& splits) {
  ASSERT_EQ(g_size, 2) << "run this test with mpirun -np 2";
  const Tokenizer tok(kShared + "/models/llama2-tokenizer");
  std::string single = (fs::path(testing::TempDir()) / ("kiln_mpi_" + name)).string();
  std::string multi = single + "-np2";
  if (g_rank == 0) fs::remove_all(multi), fs::remove_all(single);
  barrier();
  preprocess(recipe(data_yaml, single), tok, Parallel{g_rank, g_size, barrier});
  if (g_rank == 0) {
    fs::rename(single, multi);
    preprocess(recipe(data_yaml, single), tok);
    for (auto& s : splits) {
      Store a(multi + "/" + s + ".h5"), b(single + "/" + s + ".h5");
      EXPECT_GT(a.size(), 0);
      EXPECT_EQ(a.data().input_ids, b.data().input_ids) << s;
      EXPECT_EQ(a.data().offsets, b.data().offsets) << s;
      EXPECT_EQ(kiln::sha256_file(multi + "/" + s + ".h5"), kiln::sha256_file(single + "/" + s + ".h5")) << s;
      EXPECT_FALSE(fs::exists(multi + "/.parts-" + s));
    }
  }
  barrier();
}

}  // namespace

TEST(PreprocessMpi, ConllSameBytesOnTwoRanks) {
  same_bytes("conll", "  format: conll\n  train: " + kShared + "/data/conll2003/eng.testa\n  max_len: 128\n", {"train"});
}

TEST(PreprocessMpi, Sst2SameBytesOnTwoRanks) {
  same_bytes("sst2",
             "  format: tsv\n  train: " + kShared + "/data/sst2/dev.tsv\n  eval: " + kShared + "/data/sst2/dev.tsv\n",
             {"train", "eval"});
}

TEST(PreprocessMpi, PackedTextSameBytesOnTwoRanks) {
  // Packing runs after the merge: windows cross the documents where the ranks' slices meet.
  same_bytes("text", "  format: text\n  skip_lines: 1\n  train: " + kShared + "/data/russian_corpus/corpus_500.txt\n  max_len: 256\n",
             {"train"});
}

TEST(PreprocessMpi, ErrorOnOneRankReachesBoth) {
  std::string dir = (fs::path(testing::TempDir()) / "kiln_mpi_err").string();
  std::string file = dir + "-src.tsv";
  if (g_rank == 0) {
    fs::remove_all(dir);
    // The long row is in the second half: only rank 1 tokenizes it.
    std::ofstream(file) << "sentence\tlabel\na\t0\nb\t1\nc\t0\none two three four five six seven eight\t1\n";
  }
  barrier();
  const Tokenizer tok(kShared + "/models/llama2-tokenizer");
  try {
    preprocess(recipe("  format: tsv\n  max_len: 4\n  truncation: error\n  train: " + file + "\n", dir), tok,
               Parallel{g_rank, g_size, barrier});
    ADD_FAILURE() << "rank " << g_rank << ": no error";
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(file + ":5: 9 tokens"), std::string::npos) << e.what();
  }
  barrier();
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
