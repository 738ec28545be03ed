// Writers that a full disk cannot leave half-done (core/files.h, h5::write_atomic): each failure is
// one InternalError naming the file and "No space left on device", and no file is left behind.
// The full disk is a 64 KiB tmpfs, mounted when the test runs as root (skipped otherwise). The HDF5
// case passes no size hint, so the write itself meets the full disk (not the free-space check).
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "core/h5.h"

namespace fs = std::filesystem;

namespace {
struct SmallDisk {
  std::string dir;
  bool mounted = false;
  SmallDisk() {
    char tmpl[] = "/tmp/kiln-small-disk-XXXXXX";
    dir = mkdtemp(tmpl);
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k") == 0;
  }
  ~SmallDisk() {
    if (mounted) ::umount(dir.c_str());
    fs::remove_all(dir);
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (auto& e : fs::recursive_directory_iterator(dir)) out.push_back(e.path().filename().string());
    return out;
  }
};

void expect_enospc(const std::function<void()>& f, const std::string& path) {
  try {
    f();
    ADD_FAILURE() << "no error writing " << path;
  } catch (const kiln::InternalError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot write " + path), std::string::npos) << m;
    EXPECT_NE(m.find("No space left on device"), std::string::npos) << m;
  }
}
}  // namespace

TEST(Files, FullDiskIsOneErrorAndNoFile) {
  SmallDisk disk;
  if (!disk.mounted) GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  const std::string big(256 << 10, 'x');
  expect_enospc([&] { kiln::write_file_atomic(disk.dir + "/a.txt", big); }, disk.dir + "/a.txt");
  EXPECT_TRUE(disk.files().empty());
  expect_enospc([&] { kiln::write_dir_atomic(disk.dir + "/folder", [&](const std::string& tmp) {
                        kiln::write_file_atomic(tmp + "/b.bin", big);
                      }); },
                disk.dir + "/folder.partial/b.bin");
  EXPECT_TRUE(disk.files().empty());
  std::vector<float> values(64 << 10, 1.0f);
  expect_enospc([&] { kiln::h5::write_atomic(disk.dir + "/c.h5", 0, H5P_DEFAULT, [&](hid_t file) {
                        kiln::h5::write_vector(file, "values", values, disk.dir + "/c.h5");
                      }); },
                disk.dir + "/c.h5");
  EXPECT_TRUE(disk.files().empty());
  // With the size given, the free-space check refuses before HDF5 writes anything.
  expect_enospc([&] { kiln::h5::write_atomic(disk.dir + "/d.h5", values.size() * 4, H5P_DEFAULT, [&](hid_t file) {
                        kiln::h5::write_vector(file, "values", values, disk.dir + "/d.h5");
                      }); },
                disk.dir + "/d.h5");
  EXPECT_TRUE(disk.files().empty());
  // Small enough: written whole.
  kiln::write_file_atomic(disk.dir + "/small.txt", "fits");
  EXPECT_EQ(disk.files(), std::vector<std::string>{"small.txt"});
}

TEST(Files, FolderGivenWithATrailingSlashIsWrittenWhole) {
  const fs::path base = fs::temp_directory_path() / ("kiln_files_" + std::to_string(::getpid()));
  fs::remove_all(base);
  kiln::write_dir_atomic((base / "out").string() + "/", [](const std::string& tmp) {
    kiln::write_file_atomic(tmp + "/a.txt", "a");
  });
  EXPECT_TRUE(fs::exists(base / "out" / "a.txt"));
  EXPECT_FALSE(fs::exists(base / "out.partial"));
  EXPECT_THROW(kiln::read_file((base / "out").string()), kiln::InputError);  // a folder
  fs::remove_all(base);
}
