// h5.cpp — implementation of the HDF5 wrapper (see h5.h).
#include "rmoe/core/h5.h"

#include <filesystem>

#include "rmoe/core/error.h"

namespace rmoe::h5 {

namespace {

template <class T> hid_t mem_type();
template <> hid_t mem_type<float>() { return H5T_NATIVE_FLOAT; }
template <> hid_t mem_type<double>() { return H5T_NATIVE_DOUBLE; }
template <> hid_t mem_type<int32_t>() { return H5T_NATIVE_INT32; }
template <> hid_t mem_type<int64_t>() { return H5T_NATIVE_INT64; }
template <> hid_t mem_type<uint16_t>() { return H5T_NATIVE_UINT16; }
template <> hid_t mem_type<uint32_t>() { return H5T_NATIVE_UINT32; }

struct Handle {  // closes any HDF5 id with the right function
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

#define RMOE_H5(call, what) \
  RMOE_CHECK((call) >= 0, "HDF5 " << what << " failed")

}  // namespace

File::File(const std::string& path, Mode mode) : path_(path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // we report errors ourselves
  if (mode == readonly) {
    RMOE_CHECK(std::filesystem::exists(path), "'" << path << "' does not exist");
    RMOE_CHECK(H5Fis_hdf5(path.c_str()) > 0, "'" << path << "' is not an HDF5 file (or is unreadable)");
    id_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  } else {
    id_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  }
  RMOE_CHECK(id_ >= 0, "HDF5 could not " << (mode == readonly ? "open" : "create") << " '" << path << "'");
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

bool File::exists(const std::string& obj) const {
  // Check each prefix: H5Lexists fails on a missing intermediate group.
  size_t pos = 0;
  while (true) {
    pos = obj.find('/', pos + 1);
    const std::string prefix = obj.substr(0, pos);
    if (!prefix.empty() && prefix != "/" && H5Lexists(id_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

std::vector<int64_t> File::shape(const std::string& dataset) const {
  RMOE_CHECK(exists(dataset), "'" << path_ << "' has no dataset '" << dataset << "'");
  Handle ds{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot open dataset '" << dataset << "' in '" << path_ << "'");
  Handle sp{H5Dget_space(ds.id), H5Sclose};
  const int nd = H5Sget_simple_extent_ndims(sp.id);
  std::vector<hsize_t> dims(nd);
  H5Sget_simple_extent_dims(sp.id, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

template <class T>
std::vector<T> File::read(const std::string& dataset, std::vector<int64_t>* shape_out) const {
  const auto dims = shape(dataset);
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<T> out(static_cast<size_t>(n));
  Handle ds{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(H5Dread(ds.id, mem_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0,
             "reading dataset '" << dataset << "' from '" << path_ << "' failed (corrupt file?)");
  if (shape_out) *shape_out = dims;
  return out;
}

template <class T>
void File::write(const std::string& dataset, const T* data, const std::vector<int64_t>& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle sp{dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
            H5Sclose};
  Handle lcpl{H5Pcreate(H5P_LINK_CREATE), H5Pclose};
  H5Pset_create_intermediate_group(lcpl.id, 1);
  Handle ds{H5Dcreate2(id_, dataset.c_str(), mem_type<T>(), sp.id, lcpl.id, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot create dataset '" << dataset << "' in '" << path_ << "'");
  RMOE_CHECK(H5Dwrite(ds.id, mem_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
             "writing dataset '" << dataset << "' to '" << path_ << "' failed");
}

namespace {
Handle open_attr(hid_t file, const std::string& path, const std::string& obj, const std::string& name) {
  hid_t a = H5Aopen_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT);
  RMOE_CHECK(a >= 0, "'" << path << "' has no attribute '" << name << "' on '" << obj << "'");
  return Handle{a, H5Aclose};
}
template <class T>
void write_attr(hid_t file, const std::string& path, const std::string& obj, const std::string& name,
                hid_t type, const void* v) {
  if (H5Aexists_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT) > 0)
    H5Adelete_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT);
  Handle sp{H5Screate(H5S_SCALAR), H5Sclose};
  Handle a{H5Acreate_by_name(file, obj.c_str(), name.c_str(), type, sp.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
           H5Aclose};
  RMOE_CHECK(a.id >= 0 && H5Awrite(a.id, type, v) >= 0,
             "cannot write attribute '" << name << "' to '" << path << "'");
}
}  // namespace

int64_t File::attr_int(const std::string& name, const std::string& obj) const {
  Handle a = open_attr(id_, path_, obj, name);
  int64_t v = 0;
  RMOE_CHECK(H5Aread(a.id, H5T_NATIVE_INT64, &v) >= 0, "attribute '" << name << "' of '" << path_ << "' is not an integer");
  return v;
}
double File::attr_double(const std::string& name, const std::string& obj) const {
  Handle a = open_attr(id_, path_, obj, name);
  double v = 0;
  RMOE_CHECK(H5Aread(a.id, H5T_NATIVE_DOUBLE, &v) >= 0, "attribute '" << name << "' of '" << path_ << "' is not a number");
  return v;
}
std::string File::attr_string(const std::string& name, const std::string& obj) const {
  Handle a = open_attr(id_, path_, obj, name);
  Handle ft{H5Aget_type(a.id), H5Tclose};
  RMOE_CHECK(H5Tget_class(ft.id) == H5T_STRING, "attribute '" << name << "' of '" << path_ << "' is not a string");
  if (H5Tis_variable_str(ft.id) > 0) {
    Handle mt{H5Tcopy(H5T_C_S1), H5Tclose};
    H5Tset_size(mt.id, H5T_VARIABLE);
    H5Tset_cset(mt.id, H5Tget_cset(ft.id));
    char* s = nullptr;
    RMOE_CHECK(H5Aread(a.id, mt.id, &s) >= 0, "reading string attribute '" << name << "' failed");
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  const size_t n = H5Tget_size(ft.id);
  std::string out(n, '\0');
  RMOE_CHECK(H5Aread(a.id, ft.id, out.data()) >= 0, "reading string attribute '" << name << "' failed");
  out.resize(out.find('\0') == std::string::npos ? n : out.find('\0'));
  return out;
}
void File::set_attr(const std::string& name, int64_t v, const std::string& obj) {
  write_attr<int64_t>(id_, path_, obj, name, H5T_NATIVE_INT64, &v);
}
void File::set_attr(const std::string& name, double v, const std::string& obj) {
  write_attr<double>(id_, path_, obj, name, H5T_NATIVE_DOUBLE, &v);
}
void File::set_attr(const std::string& name, const std::string& v, const std::string& obj) {
  Handle t{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(t.id, H5T_VARIABLE);
  H5Tset_cset(t.id, H5T_CSET_UTF8);
  const char* s = v.c_str();
  write_attr<std::string>(id_, path_, obj, name, t.id, &s);
}

#define RMOE_H5_INST(T)                                                                         \
  template std::vector<T> File::read<T>(const std::string&, std::vector<int64_t>*) const;       \
  template void File::write<T>(const std::string&, const T*, const std::vector<int64_t>&);
RMOE_H5_INST(float)
RMOE_H5_INST(double)
RMOE_H5_INST(int32_t)
RMOE_H5_INST(int64_t)
RMOE_H5_INST(uint16_t)
RMOE_H5_INST(uint32_t)

}  // namespace rmoe::h5
