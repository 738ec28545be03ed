#include "core/h5.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/files.h"
#include "core/hash.h"

namespace kiln::h5 {

void quiet() {
  static bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

namespace {
// The errno of the system call HDF5's file driver failed in, from the error stack ("errno = 28");
// 0 when the stack names none.
int stack_errno() {
  int found = 0;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        const char* m = e->desc ? std::strstr(e->desc, "errno = ") : nullptr;
        if (m && *static_cast<int*>(out) == 0) *static_cast<int*>(out) = std::atoi(m + 8);
        return 0;
      },
      &found);
  return found;
}
int h5_errno() {
  int e = stack_errno();
  return e ? e : (errno ? errno : EIO);
}
}  // namespace

void write_error(const std::string& what) { throw WriteFailure(what, stack_errno()); }

void write_atomic(const std::string& path, uint64_t bytes_hint, hid_t fcpl, const std::function<void(hid_t)>& fill,
                  const std::function<void(const std::string&)>& after_close) {
  quiet();
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) fs::create_directories(dir, ec);
  if (ec) write_failed(path, ec.value());
  const std::string tmp = path + ".tmp";
  std::remove(tmp.c_str());  // what a killed earlier attempt left: its space counts as free
  // Checked first: HDF5 meeting a full disk half-way leaves its file state for the library's exit
  // handlers to trip over; a refusal before any write leaves nothing.
  const auto space = fs::space(dir.empty() ? fs::path(".") : dir, ec);
  const uint64_t need = bytes_hint + bytes_hint / 64 + (64u << 10);
  if (!ec && space.available < need)
    throw InternalError(fmt::format("cannot write {}: {} (needs about {:.1f} MiB, {:.1f} MiB free)", path,
                                    std::strerror(ENOSPC), double(need) / (1 << 20), double(space.available) / (1 << 20)));
  int err = 0;
  std::exception_ptr thrown;  // not an I/O failure (an unsupported dtype...): goes on as it was
  {
    Handle file{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl, H5P_DEFAULT), H5Fclose};
    if (file.id < 0) write_failed(path, h5_errno());
    try {
      errno = 0;
      fill(file.id);
      if (H5Fflush(file.id, H5F_SCOPE_GLOBAL) < 0) err = h5_errno();
    } catch (const WriteFailure& e) {
      err = e.err ? e.err : EIO;
    } catch (...) {
      thrown = std::current_exception();
    }
    if (H5Fclose(file.id) < 0 && err == 0) err = h5_errno();
    file.id = -1;
  }
  if (err == 0 && after_close) {
    try {
      after_close(tmp);
    } catch (const WriteFailure& e) {
      err = e.err ? e.err : EIO;
    } catch (...) {
      thrown = std::current_exception();
    }
  }
  if (thrown) {
    std::remove(tmp.c_str());
    std::rethrow_exception(thrown);
  }
  if (err == 0) {
    int fd = ::open(tmp.c_str(), O_RDONLY);
    if (fd < 0 || ::fsync(fd) != 0) err = errno;
    if (fd >= 0) ::close(fd);
  }
  if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    std::remove(tmp.c_str());
    write_failed(path, err);
  }
  sync_dir(dir.string());
}

template <>
hid_t native_type<int32_t>() { return H5T_NATIVE_INT32; }
template <>
hid_t native_type<int64_t>() { return H5T_NATIVE_INT64; }
template <>
hid_t native_type<uint8_t>() { return H5T_NATIVE_UINT8; }
template <>
hid_t native_type<float>() { return H5T_NATIVE_FLOAT; }
template <>
hid_t native_type<double>() { return H5T_NATIVE_DOUBLE; }

void write_string_attr(hid_t obj, const char* name, const std::string& s) {
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, std::max<size_t>(s.size(), 1));
  H5Tset_strpad(type.id, H5T_STR_NULLPAD);
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle attr{H5Acreate2(obj, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  std::string padded = s.empty() ? std::string(1, '\0') : s;
  if (attr.id < 0 || H5Awrite(attr.id, type.id, padded.data()) < 0)
    write_error(fmt::format("cannot write HDF5 attribute {}", name));
}

bool read_string_attr(hid_t obj, const char* name, std::string& out) {
  if (H5Aexists(obj, name) <= 0) return false;
  Handle attr{H5Aopen(obj, name, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0) return false;
  Handle type{H5Aget_type(attr.id), H5Tclose};
  if (type.id < 0 || H5Tget_class(type.id) != H5T_STRING) return false;
  size_t n = H5Tget_size(type.id);
  std::string s(n, '\0');
  Handle mem{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(mem.id, n);
  H5Tset_strpad(mem.id, H5T_STR_NULLPAD);
  if (H5Aread(attr.id, mem.id, s.data()) < 0) return false;
  s.resize(strnlen(s.data(), n));
  out = s;
  return true;
}

bool exists(hid_t loc, const std::string& name) { return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0; }

void write_array(hid_t file, const std::string& name, hid_t type, const void* data, size_t n, const std::string& path) {
  hsize_t dims[1] = {n};
  Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  H5Pset_obj_track_times(dcpl.id, 0);
  Handle ds{H5Dcreate2(file, name.c_str(), type, space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0 || (n > 0 && H5Dwrite(ds.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
    write_error(fmt::format("{}: cannot write dataset {}", path, name));
}

void read_array(hid_t file, const std::string& name, hid_t type, size_t elem_size, std::vector<char>& out,
                const std::string& path) {
  Handle ds{H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) input_error("{}: cannot open dataset {}", path, name);
  Handle space{H5Dget_space(ds.id), H5Sclose};
  if (H5Sget_simple_extent_ndims(space.id) != 1) input_error("{}: dataset {} is not a 1-D array", path, name);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.id, &n, nullptr);
  out.resize(size_t(n) * elem_size);
  if (n && H5Dread(ds.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    input_error("{}: cannot read dataset {}", path, name);
}

namespace {
const char kSealMagic[] = "kiln-seal 1\n";

// sha256 of the bytes of `fd` from kSealBytes to the end; false on a read error (errno set).
bool digest_after_seal(int fd, std::string& hex) {
  Sha256 h;
  std::vector<char> buf(1 << 20);
  off_t at = off_t(kSealBytes);
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), at);
    if (n < 0) return false;
    if (n == 0) break;
    h.update(buf.data(), size_t(n));
    at += n;
  }
  hex = h.hex();
  return true;
}
}  // namespace

void write_sealed(const std::string& path, uint64_t bytes_hint, const std::function<void(hid_t file)>& fill) {
  Handle fcpl{H5Pcreate(H5P_FILE_CREATE), H5Pclose};
  if (fcpl.id < 0 || H5Pset_userblock(fcpl.id, kSealBytes) < 0) throw InternalError("HDF5: cannot set a user block");
  write_atomic(path, bytes_hint, fcpl.id, fill, [&](const std::string& tmp) {
    int fd = ::open(tmp.c_str(), O_RDWR);
    if (fd < 0) throw WriteFailure(fmt::format("cannot seal {}", path), errno);
    std::string hex;
    std::string header;
    bool ok = digest_after_seal(fd, hex);
    if (ok) {
      header = std::string(kSealMagic) + "sha256 " + hex + "\n";
      header.resize(kSealBytes, '\0');
      ok = ::pwrite(fd, header.data(), header.size(), 0) == ssize_t(header.size());
    }
    const int e = errno;
    ::close(fd);
    if (!ok) throw WriteFailure(fmt::format("cannot seal {}", path), e ? e : EIO);
  });
}

std::string seal_problem(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return std::strerror(errno);
  std::string header(kSealBytes, '\0');
  const ssize_t n = ::pread(fd, header.data(), header.size(), 0);
  std::string hex;
  const bool read_ok = n == ssize_t(kSealBytes) && digest_after_seal(fd, hex);
  ::close(fd);
  if (n >= 0 && n < ssize_t(kSealBytes)) return fmt::format("truncated ({} bytes)", n);
  if (!read_ok) return "unreadable";
  const std::string magic = kSealMagic;
  if (header.compare(0, magic.size(), magic) != 0)
    return "no integrity seal (not a kiln checkpoint, or one from before kiln sealed them)";
  const std::string stored = header.substr(magic.size() + 7, 64);
  if (header.compare(magic.size(), 7, "sha256 ") != 0 || stored.size() != 64) return "damaged integrity seal";
  if (stored != hex)
    return fmt::format("contents do not match their checksum (sealed sha256 {}, file {})", stored.substr(0, 16),
                       hex.substr(0, 16));
  return "";
}

}  // namespace kiln::h5
