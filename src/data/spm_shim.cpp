// A C interface around libsentencepiece, built as its own shared library and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by tokenizer.cpp. Why: Debian's libsentencepiece exports the
// symbols of the protobuf-lite 3.14 it bundles, while libtorch loads libprotobuf 3.21; linked into
// one process, protobuf's static initialisers bind to sentencepiece's copies and crash before
// main(). Loaded privately and deep-bound, each library keeps its own protobuf.
// Only plain C types cross this boundary, and no exception does: sentencepiece's CHECKs throw on an id
// outside the vocabulary (which a damaged model's own bos/eos/unk ids can be), so ids are checked
// here and anything thrown is turned into the function's "nothing" value.
#include <sentencepiece_processor.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {
using Sp = sentencepiece::SentencePieceProcessor;
int64_t copy_out(const std::string& s, char* out, int64_t cap) {
  if (out && int64_t(s.size()) <= cap) std::memcpy(out, s.data(), s.size());
  return int64_t(s.size());
}
const Sp& sp_of(void* h) { return *static_cast<Sp*>(h); }
bool valid(void* h, int32_t id) { return id >= 0 && id < sp_of(h).GetPieceSize(); }
}  // namespace

#define KILN_SPM_API extern "C" __attribute__((visibility("default")))

KILN_SPM_API void* kiln_spm_load(const char* path, char* err, int64_t err_cap) {
  auto* sp = new Sp();
  std::string msg;
  try {
    auto status = sp->Load(path);
    if (status.ok()) return sp;
    msg = status.ToString();
  } catch (const std::exception& e) {
    msg = e.what();
  }
  std::snprintf(err, size_t(err_cap), "%s", msg.c_str());
  delete sp;
  return nullptr;
}

KILN_SPM_API void kiln_spm_free(void* h) { delete static_cast<Sp*>(h); }

// Returns the number of ids; writes them when it is <= cap (call again with a larger buffer if
// not). -1 when sentencepiece fails.
KILN_SPM_API int64_t kiln_spm_encode(void* h, const char* text, int64_t len, int32_t* out, int64_t cap) {
  std::vector<int> ids;
  try {
    if (!sp_of(h).Encode(std::string_view(text, size_t(len)), &ids).ok()) return -1;
  } catch (const std::exception&) {
    return -1;
  }
  if (int64_t(ids.size()) <= cap)
    for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i];
  return int64_t(ids.size());
}

// Ids outside the vocabulary are not text and decode to nothing (a model's vocabulary may be larger
// than its tokenizer's).
KILN_SPM_API int64_t kiln_spm_decode(void* h, const int32_t* ids, int64_t n, char* out, int64_t cap) {
  std::vector<int> v;
  for (int64_t i = 0; i < n; ++i)
    if (valid(h, ids[i])) v.push_back(ids[i]);
  std::string s;
  try {
    if (!sp_of(h).Decode(v, &s).ok()) s.clear();
  } catch (const std::exception&) {
    s.clear();
  }
  return copy_out(s, out, cap);
}

KILN_SPM_API int64_t kiln_spm_piece(void* h, int32_t id, char* out, int64_t cap) {
  return copy_out(valid(h, id) ? sp_of(h).IdToPiece(id) : std::string(), out, cap);
}

KILN_SPM_API int32_t kiln_spm_piece_to_id(void* h, const char* piece, int64_t len) {
  return sp_of(h).PieceToId(std::string_view(piece, size_t(len)));
}

KILN_SPM_API float kiln_spm_score(void* h, int32_t id) { return valid(h, id) ? sp_of(h).GetScore(id) : 0.0f; }

// 0 vocabulary size, 1 bos, 2 eos, 3 pad, 4 unk; a special id outside the vocabulary reads as -1.
KILN_SPM_API int32_t kiln_spm_info(void* h, int32_t what) {
  const Sp& sp = sp_of(h);
  int32_t id = -1;
  switch (what) {
    case 0: return sp.GetPieceSize();
    case 1: id = sp.bos_id(); break;
    case 2: id = sp.eos_id(); break;
    case 3: id = sp.pad_id(); break;
    case 4: id = sp.unk_id(); break;
    default: return -1;
  }
  return valid(h, id) ? id : -1;
}

// 0 normal or user-defined, 1 byte, 2 control / unknown / unused (and ids outside the vocabulary).
KILN_SPM_API int32_t kiln_spm_kind(void* h, int32_t id) {
  const Sp& sp = sp_of(h);
  if (!valid(h, id)) return 2;
  if (sp.IsByte(id)) return 1;
  if (sp.IsControl(id) || sp.IsUnknown(id) || sp.IsUnused(id)) return 2;
  return 0;
}

KILN_SPM_API int64_t kiln_spm_serialized(void* h, char* out, int64_t cap) {
  return copy_out(sp_of(h).serialized_model_proto(), out, cap);
}
