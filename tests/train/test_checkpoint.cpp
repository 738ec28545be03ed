// Checkpoint files: exact round trip of every dtype, and corruption (truncation, flipped bytes)
// reported as a one-line error naming the file. Also the TensorBoard event format.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "core/h5.h"
#include "train/checkpoint.h"
#include "train/tensorboard.h"

using namespace kiln::train;
namespace fs = std::filesystem;

namespace {
std::string tmpdir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("kiln_test_ckpt_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

CheckpointFile sample() {
  at::manual_seed(7);
  CheckpointFile c;
  c.groups["weights"] = {{"model.layers.0.self_attn.q_proj.lora_A.weight", at::randn({4, 16})},
                         {"model.layers.0.self_attn.q_proj.lora_B.weight", at::randn({16, 4})},
                         {"score.bias", at::randn({3})}};
  c.groups["optimizer"] = {{"score.bias|exp_avg", at::randn({3}, at::kDouble)}};
  c.groups["misc"] = {{"bf16", at::randn({5}).to(at::kBFloat16)},
                      {"half", at::randn({2, 2}).to(at::kHalf)},
                      {"long", at::arange(6, at::kLong).view({2, 3})},
                      {"int", at::arange(3, at::kInt)},
                      {"bool", at::tensor({1, 0, 1}).to(at::kBool)},
                      {"bytes", at::arange(200, at::kByte)},
                      {"scalar", at::scalar_tensor(3.5)},
                      {"empty", at::empty({0, 4})}};
  c.attrs["meta"] = R"({"step": 12})";
  c.attrs["recipe"] = "train:\n  lr: 0.0001\n";
  return c;
}

void expect_same(const CheckpointFile& a, const CheckpointFile& b) {
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (auto& [g, ts] : a.groups) {
    const auto& other = b.group(g);
    std::map<std::string, at::Tensor> m(other.begin(), other.end());
    ASSERT_EQ(ts.size(), other.size());
    for (auto& [name, t] : ts) {
      ASSERT_TRUE(m.count(name)) << g << "/" << name;
      EXPECT_EQ(m[name].scalar_type(), t.scalar_type()) << name;
      EXPECT_EQ(m[name].sizes(), t.sizes()) << name;
      EXPECT_TRUE(at::equal(m[name], t)) << name;
    }
  }
  EXPECT_EQ(a.attrs, b.attrs);
}

// The file offset of a dataset's raw data (contiguous layout), to flip a byte inside the weights.
haddr_t data_offset(const std::string& path, const std::string& dataset) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  haddr_t off = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  return off;
}

void flip_byte(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(offset));
  char ch;
  f.read(&ch, 1);
  ch = char(ch ^ 0x10);
  f.seekp(std::streamoff(offset));
  f.write(&ch, 1);
}

std::string error_of(const std::string& path) {
  try {
    read_checkpoint(path);
  } catch (const kiln::InputError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Checkpoint, RoundTripIsExact) {
  auto dir = tmpdir("roundtrip");
  auto c = sample();
  std::string path = dir + "/" + checkpoint_name(12);
  write_checkpoint(path, c);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  auto back = read_checkpoint(path);
  expect_same(c, back);
  EXPECT_EQ(back.sha256(), c.sha256());
  fs::remove_all(dir);
}

TEST(Checkpoint, TruncatedIsDetected) {
  auto dir = tmpdir("trunc");
  std::string path = dir + "/" + checkpoint_name(1);
  write_checkpoint(path, sample());
  auto size = fs::file_size(path);
  for (double frac : {0.9, 0.5, 0.1}) {
    std::string p = dir + "/t.h5";
    fs::copy_file(path, p, fs::copy_options::overwrite_existing);
    fs::resize_file(p, uintmax_t(double(size) * frac));
    std::string err = error_of(p);
    EXPECT_NE(err.find("corrupt"), std::string::npos) << frac << ": " << err;
    EXPECT_NE(err.find(p), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << "one line: " << err;
  }
  fs::remove_all(dir);
}

TEST(Checkpoint, FlippedByteInWeightsIsDetected) {
  auto dir = tmpdir("flip");
  std::string path = dir + "/" + checkpoint_name(1);
  write_checkpoint(path, sample());
  haddr_t off = data_offset(path, "weights/model.layers.0.self_attn.q_proj.lora_B.weight");
  ASSERT_NE(off, HADDR_UNDEF);
  flip_byte(path, size_t(off) + 37);
  std::string err = error_of(path);
  EXPECT_NE(err.find("do not match their checksum"), std::string::npos) << err;
  fs::remove_all(dir);
}

// The seal is checked before HDF5 parses a byte (HDF5 1.10 can crash on damaged metadata: a fuzzer
// found one in H5Dread, tests/fuzz/corpus/fuzz_checkpoint/finding-*). A well-formed HDF5 file
// without the seal, such as one kiln wrote before sealing, is refused the same way.
TEST(Checkpoint, SealIsCheckedBeforeHdf5ParsesTheFile) {
  auto dir = tmpdir("seal");
  std::string path = dir + "/" + checkpoint_name(1);
  write_checkpoint(path, sample());
  std::ifstream in(path, std::ios::binary);
  std::string head(12, '\0');
  in.read(head.data(), 12);
  EXPECT_EQ(head, "kiln-seal 1\n");

  std::string plain = dir + "/plain.h5";
  kiln::h5::write_atomic(plain, 0, H5P_DEFAULT, [](hid_t file) { kiln::h5::write_string_attr(file, "sha256", "x"); });
  std::string err = error_of(plain);
  EXPECT_NE(err.find("no integrity seal"), std::string::npos) << err;
  EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(Checkpoint, AnyFlippedByteIsAnErrorOrHarmless) {
  // Flip bytes all over the file: each flip must either be reported, or leave contents that are
  // exactly the original (a byte of HDF5 padding nobody reads). Never a silently different model.
  auto dir = tmpdir("sweep");
  std::string path = dir + "/" + checkpoint_name(1);
  auto c = sample();
  write_checkpoint(path, c);
  const std::string want = c.sha256();
  auto size = fs::file_size(path);
  std::mt19937 rng(3);
  int detected = 0, harmless = 0;
  for (int i = 0; i < 150; ++i) {
    std::string p = dir + "/s.h5";
    fs::copy_file(path, p, fs::copy_options::overwrite_existing);
    size_t off = size_t(rng() % size);
    flip_byte(p, off);
    try {
      auto back = read_checkpoint(p);
      EXPECT_EQ(back.sha256(), want) << "byte " << off;
      ++harmless;
    } catch (const kiln::InputError& e) {
      ++detected;
    }
  }
  EXPECT_GT(detected, 0);
  std::printf("flipped bytes: %d detected, %d in unused space\n", detected, harmless);
  fs::remove_all(dir);
}

TEST(Checkpoint, ListAndPrune) {
  auto dir = tmpdir("prune");
  for (int64_t s : {10, 30, 20, 40}) write_checkpoint(dir + "/" + checkpoint_name(s), sample());
  std::ofstream(dir + "/" + checkpoint_name(50) + ".tmp") << "partial";
  auto all = list_checkpoints(dir);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all.front().first, 10);
  EXPECT_EQ(all.back().first, 40);
  Retention(dir, 2).prune();
  all = list_checkpoints(dir);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 30);
  EXPECT_EQ(all[1].first, 40);
  fs::remove_all(dir);
}

// Retention counts checkpoints that verify: corrupt ones are renamed *.corrupt (kept for a look,
// never counted), and the checkpoint the run resumed from stays whatever `keep` says.
TEST(Checkpoint, RetentionCountsVerifiedCheckpointsOnly) {
  auto dir = tmpdir("retention");
  for (int64_t s : {5, 10, 15, 20}) write_checkpoint(dir + "/" + checkpoint_name(s), sample());
  for (int64_t s : {10, 15, 20}) fs::resize_file(dir + "/" + checkpoint_name(s), 1000);  // torn writes
  Retention keep(dir, 1);
  keep.protect(dir + "/" + checkpoint_name(5));  // resumed from
  write_checkpoint(dir + "/" + checkpoint_name(6), sample());
  keep.written(dir + "/" + checkpoint_name(6));
  keep.prune();
  auto all = list_checkpoints(dir);
  ASSERT_EQ(all.size(), 2u);  // the newest good one and the one resumed from
  EXPECT_EQ(all[0].first, 5);
  EXPECT_EQ(all[1].first, 6);
  for (int64_t s : {10, 15, 20}) EXPECT_TRUE(fs::exists(dir + "/" + checkpoint_name(s) + ".corrupt")) << s;
  // Later checkpoints push out the old ones, never the one resumed from.
  for (int64_t s : {7, 8}) {
    write_checkpoint(dir + "/" + checkpoint_name(s), sample());
    keep.written(dir + "/" + checkpoint_name(s));
    keep.prune();
  }
  all = list_checkpoints(dir);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 5);
  EXPECT_EQ(all[1].first, 8);
  fs::remove_all(dir);
}

TEST(Checkpoint, MissingFileIsAnInputError) {
  EXPECT_THROW(read_checkpoint("/nonexistent/step-00000001.h5"), kiln::InputError);
}

TEST(TensorBoard, Crc32cKnownValues) {
  // RFC 3720 B.4 test vectors and the classic "123456789" check value of CRC-32C.
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), inc(32);
  for (int i = 0; i < 32; ++i) inc[size_t(i)] = uint8_t(i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(inc.data(), 32), 0x46DD794Eu);
}

TEST(TensorBoard, WriteAndReadBack) {
  auto dir = tmpdir("tb");
  std::string path;
  {
    EventWriter w(dir);
    path = w.path();
    w.scalar("train/loss", 2.5, 1, 1000.0);
    w.scalar("train/loss", 1.25, 2, 1001.0);
    w.scalar("eval/accuracy", 0.875, 300000, 1002.0);  // a step beyond one varint byte
  }
  EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
  auto ev = read_events(path);
  EXPECT_EQ(ev.file_version, "brain.Event:2");
  ASSERT_EQ(ev.scalars.size(), 3u);
  EXPECT_EQ(ev.scalars[0].tag, "train/loss");
  EXPECT_FLOAT_EQ(ev.scalars[0].value, 2.5f);
  EXPECT_EQ(ev.scalars[1].step, 2);
  EXPECT_EQ(ev.scalars[2].step, 300000);
  EXPECT_EQ(ev.scalars[2].tag, "eval/accuracy");
  EXPECT_DOUBLE_EQ(ev.scalars[2].wall_time, 1002.0);
  // A damaged record is reported.
  flip_byte(path, fs::file_size(path) - 6);
  EXPECT_THROW(read_events(path), kiln::InputError);
  fs::remove_all(dir);
}
