// A C interface around libsentencepiece, built as its own shared library and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by tokenizer.cpp. Why: Debian's libsentencepiece exports the
// symbols of the protobuf-lite 3.14 it bundles, while libtorch loads libprotobuf 3.21; linked into
// one process, protobuf's static initialisers bind to sentencepiece's copies and crash before
// main(). Loaded privately and deep-bound, each library keeps its own protobuf.
// Only plain C types cross this boundary.
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
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* kiln_spm_load(const char* path, char* err, int64_t err_cap) {
  auto* sp = new Sp();
  auto status = sp->Load(path);
  if (!status.ok()) {
    std::string msg = status.ToString();
    std::snprintf(err, size_t(err_cap), "%s", msg.c_str());
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void kiln_spm_free(void* h) { delete static_cast<Sp*>(h); }

// Returns the number of ids; writes them when it is <= cap (call again with a larger buffer if not).
__attribute__((visibility("default"))) int64_t kiln_spm_encode(void* h, const char* text, int64_t len,
                                                               int32_t* out, int64_t cap) {
  std::vector<int> ids;
  static_cast<Sp*>(h)->Encode(std::string_view(text, size_t(len)), &ids);
  if (int64_t(ids.size()) <= cap)
    for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i];
  return int64_t(ids.size());
}

__attribute__((visibility("default"))) int64_t kiln_spm_decode(void* h, const int32_t* ids, int64_t n, char* out,
                                                               int64_t cap) {
  std::vector<int> v(ids, ids + n);
  std::string s;
  static_cast<Sp*>(h)->Decode(v, &s);
  return copy_out(s, out, cap);
}

__attribute__((visibility("default"))) int64_t kiln_spm_piece(void* h, int32_t id, char* out, int64_t cap) {
  return copy_out(static_cast<Sp*>(h)->IdToPiece(id), out, cap);
}

__attribute__((visibility("default"))) int32_t kiln_spm_piece_to_id(void* h, const char* piece, int64_t len) {
  return static_cast<Sp*>(h)->PieceToId(std::string_view(piece, size_t(len)));
}

__attribute__((visibility("default"))) float kiln_spm_score(void* h, int32_t id) {
  return static_cast<Sp*>(h)->GetScore(id);
}

__attribute__((visibility("default"))) int32_t kiln_spm_info(void* h, int32_t what) {
  auto* sp = static_cast<Sp*>(h);
  switch (what) {
    case 0: return sp->GetPieceSize();
    case 1: return sp->bos_id();
    case 2: return sp->eos_id();
    case 3: return sp->pad_id();
    case 4: return sp->unk_id();
    default: return -1;
  }
}

// 0 normal or user-defined, 1 byte, 2 control / unknown / unused.
__attribute__((visibility("default"))) int32_t kiln_spm_kind(void* h, int32_t id) {
  auto* sp = static_cast<Sp*>(h);
  if (sp->IsByte(id)) return 1;
  if (sp->IsControl(id) || sp->IsUnknown(id) || sp->IsUnused(id)) return 2;
  return 0;
}

__attribute__((visibility("default"))) int64_t kiln_spm_serialized(void* h, char* out, int64_t cap) {
  return copy_out(static_cast<Sp*>(h)->serialized_model_proto(), out, cap);
}

}  // extern "C"
