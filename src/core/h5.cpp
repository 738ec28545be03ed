#include "core/h5.h"

#include <cstring>

#include "core/error.h"

namespace kiln::h5 {

void quiet() {
  static bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
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
    throw InternalError(fmt::format("cannot write HDF5 attribute {}", name));
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
    throw InternalError(fmt::format("{}: cannot write dataset {}", path, name));
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

}  // namespace kiln::h5
