#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/progress.h"

using namespace kiln;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Split updates give the same digest as one.
  Sha256 s;
  s.update(million.data(), 63);
  s.update(million.data() + 63, million.size() - 63);
  EXPECT_EQ(s.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileMatchesBuffer) {
  std::string path = testing::TempDir() + "/kiln_sha_file";
  std::ofstream(path) << "abc";
  EXPECT_EQ(sha256_file(path), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::remove(path.c_str());
  EXPECT_THROW(sha256_file(path), InputError);
}

TEST(Errors, ExitCodesAndCheck) {
  EXPECT_EQ(InputError("x").exit_code(), 2);
  EXPECT_EQ(InternalError("x").exit_code(), 1);
  try {
    KILN_CHECK(1 + 1 == 3, "math is {}", "broken");
    FAIL();
  } catch (const InternalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("test_misc.cpp"), std::string::npos) << m;
    EXPECT_NE(m.find("math is broken"), std::string::npos) << m;
  }
  EXPECT_EQ(shorten("abc\tdef", 80), "abc def");
  EXPECT_EQ(shorten(std::string(100, 'x'), 10), std::string(10, 'x') + "...");
}

TEST(Log, ParseLevel) {
  EXPECT_EQ(log::parse_level("debug"), log::Level::debug);
  EXPECT_EQ(log::parse_level("warn"), log::Level::warn);
  EXPECT_THROW(log::parse_level("loud"), InputError);
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(Progress::format_duration(12.2), "12s");
  EXPECT_EQ(Progress::format_duration(185), "3m05s");
  EXPECT_EQ(Progress::format_duration(3720), "1h02m");
}
