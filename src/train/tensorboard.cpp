#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kiln::train {

namespace {
std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli, reflected
    t[i] = c;
  }
  return t;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}
void put_key(std::string& out, int field, int wire) { put_varint(out, uint64_t(field) << 3 | uint64_t(wire)); }
template <typename T>
void put_fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // protobuf fixed-width fields are little-endian, like x86 and ARM
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& s) {
  put_key(out, field, 2);
  put_varint(out, s.size());
  out += s;
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}
}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const auto table = make_table();
  auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

EventWriter::EventWriter(const std::string& dir, const std::string& suffix) {
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  // pid and a per-process counter as PyTorch's SummaryWriter adds them: two writers started within
  // one second (a quick resume) must not truncate each other's file.
  static int counter = 0;
  path_ = fmt::format("{}/events.out.tfevents.{}.{}.{}.{}.{}", dir, int64_t(now_seconds()), host, getpid(), counter++,
                      suffix);
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) input_error("cannot create TensorBoard event file {}: {}", path_, std::strerror(errno));
  std::string ev;
  put_key(ev, 1, 1);
  put_fixed(ev, now_seconds());
  put_bytes(ev, 3, "brain.Event:2");
  record(ev);
  flush();
}

EventWriter::~EventWriter() {
  if (f_) std::fclose(f_);
}

void EventWriter::scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::string v;
  put_bytes(v, 1, tag);
  put_key(v, 2, 5);
  put_fixed(v, float(value));
  std::string summary;
  put_bytes(summary, 1, v);
  std::string ev;
  put_key(ev, 1, 1);
  put_fixed(ev, wall_time >= 0 ? wall_time : now_seconds());
  put_key(ev, 2, 0);
  put_varint(ev, uint64_t(step));
  put_bytes(ev, 5, summary);
  record(ev);
}

void EventWriter::record(const std::string& data) {
  std::string r;
  uint64_t len = data.size();
  put_fixed(r, len);
  put_fixed(r, masked_crc32c(&len, sizeof(len)));
  r += data;
  put_fixed(r, masked_crc32c(data.data(), data.size()));
  if (std::fwrite(r.data(), 1, r.size(), f_) != r.size())
    throw InternalError(fmt::format("writing {}: {}", path_, std::strerror(errno)));
}

void EventWriter::flush() { std::fflush(f_); }

// ---- reading ----

namespace {
struct Cursor {
  const std::string& s;
  size_t pos;
  size_t end;
  const std::string& path;
  [[noreturn]] void bad(const char* what) const { input_error("{}: malformed event at byte {}: {}", path, pos, what); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= end) bad("varint runs past the end");
      uint8_t b = uint8_t(s[pos++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("varint too long");
  }
  template <typename T>
  T fixed() {
    if (pos + sizeof(T) > end) bad("fixed field runs past the end");
    T v;
    std::memcpy(&v, s.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::pair<size_t, size_t> bytes() {
    uint64_t n = varint();
    if (pos + n > end) bad("length-delimited field runs past the end");
    size_t b = pos;
    pos += n;
    return {b, pos};
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: fixed<uint64_t>(); break;
      case 2: bytes(); break;
      case 5: fixed<uint32_t>(); break;
      default: bad("unknown wire type");
    }
  }
};
}  // namespace

EventFile read_events(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) input_error("cannot read {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  EventFile out;
  size_t pos = 0;
  while (pos < s.size()) {
    if (pos + 12 > s.size()) input_error("{}: truncated record header at byte {}", path, pos);
    uint64_t len;
    uint32_t len_crc;
    std::memcpy(&len, s.data() + pos, 8);
    std::memcpy(&len_crc, s.data() + pos + 8, 4);
    if (len_crc != masked_crc32c(&len, 8)) input_error("{}: bad length checksum at byte {}", path, pos);
    size_t data = pos + 12;
    if (data + len + 4 > s.size()) input_error("{}: truncated record at byte {}", path, pos);
    uint32_t data_crc;
    std::memcpy(&data_crc, s.data() + data + len, 4);
    if (data_crc != masked_crc32c(s.data() + data, len)) input_error("{}: bad data checksum at byte {}", path, pos);

    Cursor c{s, data, data + len, path};
    double wall = 0;
    int64_t step = 0;
    std::vector<std::pair<std::string, float>> values;
    while (c.pos < c.end) {
      uint64_t key = c.varint();
      int field = int(key >> 3), wire = int(key & 7);
      if (field == 1 && wire == 1) {
        wall = c.fixed<double>();
      } else if (field == 2 && wire == 0) {
        step = int64_t(c.varint());
      } else if (field == 3 && wire == 2) {
        auto [b, e] = c.bytes();
        out.file_version = s.substr(b, e - b);
      } else if (field == 5 && wire == 2) {
        auto [sb, se] = c.bytes();
        Cursor sc{s, sb, se, path};
        while (sc.pos < sc.end) {
          uint64_t k = sc.varint();
          if ((k >> 3) != 1 || (k & 7) != 2) {
            sc.skip(int(k & 7));
            continue;
          }
          auto [vb, ve] = sc.bytes();
          Cursor vc{s, vb, ve, path};
          std::string tag;
          float value = 0;
          bool simple = false;
          while (vc.pos < vc.end) {
            uint64_t vk = vc.varint();
            if (vk == (1 << 3 | 2)) {
              auto [tb, te] = vc.bytes();
              tag = s.substr(tb, te - tb);
            } else if (vk == (2 << 3 | 5)) {
              value = vc.fixed<float>();
              simple = true;
            } else {
              vc.skip(int(vk & 7));
            }
          }
          if (simple) values.emplace_back(tag, value);
        }
      } else {
        c.skip(wire);
      }
    }
    for (auto& [tag, v] : values) out.scalars.push_back({wall, step, tag, v});
    pos = data + len + 4;
  }
  return out;
}

}  // namespace kiln::train
