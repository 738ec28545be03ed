// GGUF in kiln: the container (core/gguf.h) written and read back, damaged files refused by name,
// and every tensor type kiln reads against llama.cpp's own Python package (`gguf`, in .venv):
// tests/model/gguf_reference.py makes the files, quantizes with the package and dequantizes with
// `gguf.quants.dequantize`; kiln must read the same values.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/gguf.h"
#include "model/gguf_model.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("kiln_test_gguf_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::vector<uint8_t> bytes_of(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace

TEST(Gguf, WrittenAndReadBack) {
  const fs::path d = temp_dir("rw");
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  w.set("a.u32", gguf::Value::u32(4000000000u));
  w.set("a.i32", gguf::Value::i32(-7));
  w.set("a.f32", gguf::Value::f32(0.25f));
  w.set("a.bool", gguf::Value::boolean(true));
  w.set("a.strings", gguf::Value::string_array({"x", "", "ünï"}));
  w.set("a.floats", gguf::Value::f32_array({1.5, -2}));
  w.set("a.ints", gguf::Value::i32_array({3, -4, 5}));
  w.add_tensor("t0", gguf::F32, {3, 2}, [] { return bytes_of({1, 2, 3, 4, 5, 6}); });
  w.add_tensor("t1", gguf::F32, {1}, [] { return bytes_of({9}); });
  const std::string path = (d / "x.gguf").string();
  w.write(path, 64);
  gguf::File f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.str("general.architecture"), "llama");
  EXPECT_EQ(f.integer("a.u32"), 4000000000LL);
  EXPECT_EQ(f.integer("a.i32"), -7);
  EXPECT_DOUBLE_EQ(f.number("a.f32"), 0.25);
  EXPECT_TRUE(f.flag("a.bool"));
  EXPECT_EQ(f.strings("a.strings"), (std::vector<std::string>{"x", "", "ünï"}));
  EXPECT_EQ(f.floats("a.floats"), (std::vector<double>{1.5, -2}));
  EXPECT_EQ(f.ints("a.ints"), (std::vector<int64_t>{3, -4, 5}));
  EXPECT_EQ(f.integer("general.alignment"), 64);
  EXPECT_EQ(f.integer_or("absent", 11), 11);
  ASSERT_EQ(f.tensors().size(), 2u);
  const gguf::Tensor* t0 = f.find_tensor("t0");
  ASSERT_NE(t0, nullptr);
  EXPECT_EQ(t0->ne, (std::vector<uint64_t>{3, 2}));
  at::Tensor a = model::gguf_tensor(f, *t0);
  EXPECT_EQ(a.sizes().vec(), (std::vector<int64_t>{2, 3}));  // PyTorch order
  EXPECT_EQ(a[1][2].item<float>(), 6.0f);
  EXPECT_EQ(f.find_tensor("t1")->offset % 64, 0u);
  EXPECT_NE(error_of([&] { f.str("a.i32"); }).find("`a.i32` is int32 where a string was expected"), std::string::npos);
  EXPECT_NE(error_of([&] { f.integer("nope"); }).find("metadata `nope` is missing"), std::string::npos);
}

TEST(Gguf, DamagedFilesAreRefusedByName) {
  const fs::path d = temp_dir("bad");
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  w.add_tensor("t", gguf::F32, {256}, [] { return bytes_of(std::vector<float>(256, 1.0f)); });
  const std::string path = (d / "ok.gguf").string();
  w.write(path);
  const auto size = fs::file_size(path);
  fs::copy_file(path, d / "cut.gguf");
  fs::resize_file(d / "cut.gguf", size - 100);
  std::string e = error_of([&] { gguf::File f((d / "cut.gguf").string()); });
  EXPECT_NE(e.find("cut.gguf: tensor `t`"), std::string::npos) << e;
  EXPECT_NE(e.find("runs past the end"), std::string::npos) << e;
  {
    std::ofstream o(d / "text.gguf");
    o << "this is not a gguf file at all, just text";
  }
  e = error_of([&] { gguf::File f((d / "text.gguf").string()); });
  EXPECT_NE(e.find("text.gguf: not a GGUF file"), std::string::npos) << e;
  fs::copy_file(path, d / "header.gguf");
  fs::resize_file(d / "header.gguf", 40);
  e = error_of([&] { gguf::File f((d / "header.gguf").string()); });
  EXPECT_NE(e.find("header.gguf: not a valid GGUF file"), std::string::npos) << e;

  const std::vector<uint8_t> q5(22, 0);
  e = error_of([&] { model::gguf_dequantize(gguf::Q5_0, q5.data(), 32, nullptr, "x.gguf: tensor `w`"); });
  EXPECT_NE(e.find("x.gguf: tensor `w`: tensor type Q5_0 is not supported"), std::string::npos) << e;
  EXPECT_EQ(gguf::type_name(77), "type 77");
  EXPECT_EQ(gguf::type_from_name("q8_0"), int64_t(gguf::Q8_0));
}

TEST(Gguf, RopeRowsBetweenOrders) {
  at::Tensor w = at::randn({3 * 8, 5});
  at::Tensor g = model::rope_rows_to_gguf(w, 3);
  EXPECT_FALSE(at::equal(g, w));
  EXPECT_TRUE(at::equal(model::rope_rows_from_gguf(g, 3), w));
  // Head 0's first rows: HF rows 0 and 4 (the two halves' first elements) become adjacent.
  EXPECT_TRUE(at::equal(g[0], w[0]));
  EXPECT_TRUE(at::equal(g[1], w[4]));
}

// Against llama.cpp's Python package. Skipped where .venv or its `gguf` package is missing.
TEST(Gguf, EveryTypeAsTheGgufPackageReadsIt) {
  const std::string python = std::string(KILN_SOURCE_DIR) + "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << python << " is missing: run scripts/install-deps.sh (it makes .venv)";
  if (std::system((python + " -c 'import gguf, safetensors' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "the `gguf` package is missing from .venv (scripts/python-env.sh installs it)";
  const fs::path d = temp_dir("types");
  const std::string cmd = python + " " + KILN_SOURCE_DIR + "/tests/model/gguf_reference.py types " + d.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  gguf::File f((d / "types.gguf").string());
  model::SafeTensorsFile expected((d / "expected.safetensors").string());
  int checked = 0;
  for (const char* name : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k"}) {
    const gguf::Tensor* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(int64_t(t->type), gguf::type_from_name(name)) << name;
    at::Tensor got = model::gguf_tensor(f, *t), want = expected.load(name);
    ASSERT_EQ(got.sizes(), want.sizes()) << name;
    // ggml's reference arithmetic, in float32 like numpy's: equal to the last bit or one rounding.
    const double tol = 1e-6 * want.abs().max().item<double>();
    EXPECT_LE((got - want).abs().max().item<double>(), tol) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
  at::Tensor q8 = expected.load("q8_input"), q8_bytes = expected.load("q8_bytes");
  std::vector<uint8_t> mine = model::gguf_quantize(gguf::Q8_0, q8);
  ASSERT_EQ(int64_t(mine.size()), q8_bytes.numel());
  EXPECT_EQ(std::memcmp(mine.data(), q8_bytes.data_ptr(), mine.size()), 0) << "Q8_0 bytes differ from gguf.quants.quantize";
  EXPECT_TRUE(at::equal(model::rope_rows_to_gguf(expected.load("q_rows"), 4), expected.load("q_rows_gguf")));
  EXPECT_TRUE(at::equal(model::rope_rows_from_gguf(expected.load("q_rows_gguf"), 4), expected.load("q_rows")));
}
