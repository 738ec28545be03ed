// Files a crash or a full disk cannot leave half-written under their final name: written to a
// temporary name beside it, flushed and fsynced, then renamed. A failure removes the temporary and
// throws one line naming the file and the system's reason ("No space left on device"), exit 1.
#pragma once
#include <functional>
#include <string>

namespace kiln {

// InternalError (exit 1): "cannot write PATH: <strerror(err)>".
[[noreturn]] void write_failed(const std::string& path, int err);

// The whole of `bytes` as `path`, or nothing (an existing file stays as it was).
void write_file_atomic(const std::string& path, const std::string& bytes);
// The same for a file written in pieces (tensors one at a time): `fill` calls `put` for each piece,
// in order. An exception from fill removes the temporary and goes on.
using PutBytes = std::function<void(const void* data, size_t size)>;
void write_file_atomic(const std::string& path, const std::function<void(const PutBytes& put)>& fill);

// Makes the folder `dir` (which must not exist) complete or not at all: `fill` writes into a
// temporary folder beside it, which is renamed to `dir` when fill returns; if fill throws, the
// temporary folder is removed and the error goes on.
void write_dir_atomic(const std::string& dir, const std::function<void(const std::string& tmp_dir)>& fill);

// The whole file; InputError "PATH: cannot read: <reason>".
std::string read_file(const std::string& path);

// fsync of a folder, so that a rename in it survives a crash (best effort).
void sync_dir(const std::string& dir);

}  // namespace kiln
