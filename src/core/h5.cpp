// h5.cpp — implementation of the HDF5 wrapper (see h5.h).
#include "rmoe/core/h5.h"

#include <atomic>
#include <filesystem>
#include <mutex>

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
template <> hid_t mem_type<uint8_t>() { return H5T_NATIVE_UINT8; }

// Closes HDF5 refused (see close_library in h5.h).
std::atomic<int> refused_closes{0};

struct Handle {  // closes any HDF5 id with the right function
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0 && close(id) < 0) ++refused_closes;
  }
};

#define RMOE_H5(call, what) \
  RMOE_CHECK((call) >= 0, "HDF5 " << what << " failed")

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex m;
  return m;
}

}  // namespace

Lock::Lock() { library_mutex().lock(); }
Lock::~Lock() { library_mutex().unlock(); }

bool is_hdf5_file(const std::string& path) {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  return H5Fis_hdf5(path.c_str()) > 0;
}

std::string error_stack_text() {
  const Lock lock;
  std::string text;
  auto walk = [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
    if (e->desc && *e->desc) *static_cast<std::string*>(data) = e->desc;  // keeps the innermost
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &text);
  for (char& c : text)  // one line: HDF5's write errors hold a ctime() with its newline
    if (c == '\n') c = ' ';
  return text;
}

File::File(const std::string& path, Mode mode) : path_(path) {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // we report errors ourselves
  if (mode == readonly) {
    RMOE_CHECK(std::filesystem::exists(path), "'" << path << "' does not exist");
    RMOE_CHECK(H5Fis_hdf5(path.c_str()) > 0, "'" << path << "' is not an HDF5 file (or is unreadable)");
    id_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  } else if (mode == truncate_checksummed) {
    Handle fapl{H5Pcreate(H5P_FILE_ACCESS), H5Pclose};
    H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V18, H5F_LIBVER_V110);
    id_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id);
  } else {
    id_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  }
  RMOE_CHECK(id_ >= 0, "HDF5 could not " << (mode == readonly ? "open" : "create") << " '" << path << "'");
}

File::~File() {
  const Lock lock;
  if (id_ >= 0 && H5Fclose(id_) < 0) ++refused_closes;
}

void File::close() {
  const Lock lock;
  if (id_ < 0) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const herr_t rc = H5Fclose(id_);
  id_ = -1;  // whatever happened: HDF5 1.10 has freed the file even when it failed (see close_library)
  if (rc >= 0) return;
  ++refused_closes;
  const std::string why = error_stack_text();
  throw_error(__FILE__, __LINE__,
              "closing '" + path_ + "' failed (disk full?): " + (why.empty() ? "unknown HDF5 error" : why) +
                  "; the file is incomplete");
}

bool close_library() {
  const Lock lock;
  if (refused_closes.load() > 0) return false;  // H5close would close a freed file again and crash
  return H5close() >= 0;
}

int failed_closes() { return refused_closes.load(); }

bool File::exists(const std::string& obj) const {
  const Lock lock;
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
  const Lock lock;
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
  const Lock lock;
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
  const Lock lock;
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
  const Lock lock;
  Handle a = open_attr(id_, path_, obj, name);
  int64_t v = 0;
  RMOE_CHECK(H5Aread(a.id, H5T_NATIVE_INT64, &v) >= 0, "attribute '" << name << "' of '" << path_ << "' is not an integer");
  return v;
}
double File::attr_double(const std::string& name, const std::string& obj) const {
  const Lock lock;
  Handle a = open_attr(id_, path_, obj, name);
  double v = 0;
  RMOE_CHECK(H5Aread(a.id, H5T_NATIVE_DOUBLE, &v) >= 0, "attribute '" << name << "' of '" << path_ << "' is not a number");
  return v;
}
std::string File::attr_string(const std::string& name, const std::string& obj) const {
  const Lock lock;
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
  const Lock lock;
  write_attr<int64_t>(id_, path_, obj, name, H5T_NATIVE_INT64, &v);
}
void File::set_attr(const std::string& name, double v, const std::string& obj) {
  const Lock lock;
  write_attr<double>(id_, path_, obj, name, H5T_NATIVE_DOUBLE, &v);
}
void File::set_attr(const std::string& name, const std::string& v, const std::string& obj) {
  const Lock lock;
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
RMOE_H5_INST(uint8_t)

// ---- additions for data shards ------------------------------------------------

bool File::has_attr(const std::string& name, const std::string& obj) const {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  return exists(obj) && H5Aexists_by_name(id_, obj.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> File::list(const std::string& group) const {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  RMOE_CHECK(exists(group), "'" << path_ << "' has no group '" << group << "'");
  std::vector<std::string> names;
  auto visit = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  RMOE_CHECK(H5Literate_by_name(id_, group.c_str(), H5_INDEX_NAME, H5_ITER_INC, nullptr, visit, &names,
                                H5P_DEFAULT) >= 0,
             "cannot list group '" << group << "' of '" << path_ << "': " << error_stack_text());
  return names;
}

File::DatasetInfo File::info(const std::string& dataset) const {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  DatasetInfo out;
  out.shape = shape(dataset);
  Handle ds{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot open dataset '" << dataset << "' in '" << path_ << "': " << error_stack_text());
  Handle type{H5Dget_type(ds.id), H5Tclose};
  out.is_integer = H5Tget_class(type.id) == H5T_INTEGER;
  out.is_signed = out.is_integer && H5Tget_sign(type.id) == H5T_SGN_2;
  out.element_bytes = int64_t(H5Tget_size(type.id));
  Handle dcpl{H5Dget_create_plist(ds.id), H5Pclose};
  if (H5Pget_layout(dcpl.id) == H5D_CHUNKED && !out.shape.empty()) {
    std::vector<hsize_t> chunk(out.shape.size());
    if (H5Pget_chunk(dcpl.id, int(chunk.size()), chunk.data()) >= 0) out.chunk = int64_t(chunk[0]);
    H5D_chunk_index_t index = H5D_CHUNK_IDX_BTREE;  // the layout message only: the index itself is not read
    out.checksummed_chunk_index = H5Dget_chunk_index_type(ds.id, &index) >= 0 && index != H5D_CHUNK_IDX_BTREE;
  }
  const int nfilters = H5Pget_nfilters(dcpl.id);
  for (int i = 0; i < nfilters; ++i) {
    unsigned flags = 0;
    size_t nelmts = 0;
    char name[64];
    if (H5Pget_filter2(dcpl.id, unsigned(i), &flags, &nelmts, nullptr, sizeof name, name, nullptr) ==
        H5Z_FILTER_FLETCHER32)
      out.fletcher32 = true;
  }
  return out;
}

template <class T>
void File::create_growable_1d(const std::string& dataset, int64_t chunk, bool fletcher32) {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  RMOE_CHECK(chunk >= 1, "chunk size " << chunk << " for '" << dataset << "' must be >= 1");
  const hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk_dims[1] = {hsize_t(chunk)};
  Handle sp{H5Screate_simple(1, dims, maxdims), H5Sclose};
  Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  RMOE_H5(H5Pset_chunk(dcpl.id, 1, chunk_dims), "H5Pset_chunk for '" << dataset << "' in '" << path_ << "'");
  if (fletcher32) RMOE_H5(H5Pset_fletcher32(dcpl.id), "H5Pset_fletcher32 for '" << dataset << "'");
  Handle lcpl{H5Pcreate(H5P_LINK_CREATE), H5Pclose};
  H5Pset_create_intermediate_group(lcpl.id, 1);
  Handle ds{H5Dcreate2(id_, dataset.c_str(), mem_type<T>(), sp.id, lcpl.id, dcpl.id, H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot create dataset '" << dataset << "' in '" << path_ << "': " << error_stack_text());
}

template <class T>
void File::append_1d(const std::string& dataset, const T* data, int64_t n) {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (n <= 0) return;
  Handle ds{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot open dataset '" << dataset << "' in '" << path_ << "'");
  hsize_t old_size = 0;
  {
    Handle sp{H5Dget_space(ds.id), H5Sclose};
    RMOE_CHECK(H5Sget_simple_extent_ndims(sp.id) == 1, "dataset '" << dataset << "' in '" << path_ << "' is not 1-D");
    H5Sget_simple_extent_dims(sp.id, &old_size, nullptr);
  }
  const hsize_t new_size = old_size + hsize_t(n), count = hsize_t(n);
  RMOE_CHECK(H5Dset_extent(ds.id, &new_size) >= 0,
             "cannot grow dataset '" << dataset << "' in '" << path_ << "': " << error_stack_text());
  Handle fsp{H5Dget_space(ds.id), H5Sclose};
  H5Sselect_hyperslab(fsp.id, H5S_SELECT_SET, &old_size, nullptr, &count, nullptr);
  Handle msp{H5Screate_simple(1, &count, nullptr), H5Sclose};
  RMOE_CHECK(H5Dwrite(ds.id, mem_type<T>(), msp.id, fsp.id, H5P_DEFAULT, data) >= 0,
             "writing " << n << " elements to '" << dataset << "' in '" << path_ << "' failed (disk full?): "
                        << error_stack_text());
}

template <class T>
void File::read_1d(const std::string& dataset, int64_t offset, int64_t n, T* out) const {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (n <= 0) return;
  Handle ds{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot open dataset '" << dataset << "' in '" << path_ << "': " << error_stack_text());
  Handle fsp{H5Dget_space(ds.id), H5Sclose};
  hsize_t size = 0;
  RMOE_CHECK(H5Sget_simple_extent_ndims(fsp.id) == 1, "dataset '" << dataset << "' in '" << path_ << "' is not 1-D");
  H5Sget_simple_extent_dims(fsp.id, &size, nullptr);
  RMOE_CHECK(offset >= 0 && hsize_t(offset + n) <= size,
             "reading [" << offset << ", " << offset + n << ") of '" << dataset << "' in '" << path_
                         << "': past its end (" << size << " elements)");
  const hsize_t start = hsize_t(offset), count = hsize_t(n);
  H5Sselect_hyperslab(fsp.id, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
  Handle msp{H5Screate_simple(1, &count, nullptr), H5Sclose};
  if (H5Dread(ds.id, mem_type<T>(), msp.id, fsp.id, H5P_DEFAULT, out) < 0) {
    const std::string why = error_stack_text();
    throw_error(__FILE__, __LINE__,
                "reading elements [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") of '" +
                    dataset + "' from '" + path_ + "' failed: " + (why.empty() ? "unknown HDF5 error" : why));
  }
}

#define RMOE_H5_INST_1D(T)                                                                  \
  template void File::create_growable_1d<T>(const std::string&, int64_t, bool);            \
  template void File::append_1d<T>(const std::string&, const T*, int64_t);                 \
  template void File::read_1d<T>(const std::string&, int64_t, int64_t, T*) const;
RMOE_H5_INST_1D(uint8_t)
RMOE_H5_INST_1D(uint16_t)
RMOE_H5_INST_1D(uint32_t)
RMOE_H5_INST_1D(int32_t)
RMOE_H5_INST_1D(int64_t)

}  // namespace rmoe::h5

// ===========================================================================
// Additions for checkpoints (see the matching block at the end of h5.h).
// ===========================================================================
#include <algorithm>

namespace rmoe::h5 {

void use_checksummed_chunk_indexes(File& f) {
  const Lock lock;
  RMOE_CHECK(H5Fset_libver_bounds(f.id(), H5F_LIBVER_V110, H5F_LIBVER_V110) >= 0,
             "cannot select the HDF5 1.10 format for '" << f.path() << "': " << error_stack_text());
}

namespace {

// Every missing group on the way to `dataset`, created one by one.
void create_parent_groups(File& f, const std::string& dataset) {
  for (size_t pos = dataset.find('/', 1); pos != std::string::npos; pos = dataset.find('/', pos + 1)) {
    const std::string group = dataset.substr(0, pos);
    if (H5Lexists(f.id(), group.c_str(), H5P_DEFAULT) > 0) continue;
    Handle g{H5Gcreate2(f.id(), group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose};
    RMOE_CHECK(g.id >= 0, "cannot create group '" << group << "' in '" << f.path() << "': " << error_stack_text());
  }
}

// Chunk dims: whole trailing axes, leading axes cut so a chunk holds at most
// max_elems elements (at least one element per axis).
std::vector<hsize_t> leading_axis_chunks(const std::vector<int64_t>& shape, int64_t max_elems) {
  std::vector<hsize_t> chunk(shape.begin(), shape.end());
  for (size_t axis = 0; axis < chunk.size(); ++axis) {
    int64_t inner = 1;  // elements per index of this axis
    for (size_t j = axis + 1; j < chunk.size(); ++j) inner *= int64_t(chunk[j]);
    if (int64_t(chunk[axis]) * inner <= max_elems) break;
    if (inner <= max_elems) {
      chunk[axis] = hsize_t(max_elems / inner);
      break;
    }
    chunk[axis] = 1;
  }
  return chunk;
}

}  // namespace

template <class T>
void write_checksummed(File& f, const std::string& dataset, const T* data, const std::vector<int64_t>& shape,
                       int64_t chunk_bytes) {
  const Lock lock;
  RMOE_CHECK(!shape.empty(), "write_checksummed('" << dataset << "'): scalars have no chunks; use an attribute");
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  create_parent_groups(f, dataset);
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle sp{H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose};
  Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  if (n > 0) {  // HDF5 cannot chunk an empty axis; an empty tensor has nothing to protect
    const auto chunk = leading_axis_chunks(shape, std::max<int64_t>(1, chunk_bytes / int64_t(sizeof(T))));
    RMOE_H5(H5Pset_chunk(dcpl.id, int(chunk.size()), chunk.data()), "H5Pset_chunk for '" << dataset << "'");
    RMOE_H5(H5Pset_fletcher32(dcpl.id), "H5Pset_fletcher32 for '" << dataset << "'");
  }
  Handle ds{H5Dcreate2(f.id(), dataset.c_str(), mem_type<T>(), sp.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot create dataset '" << dataset << "' in '" << f.path() << "': " << error_stack_text());
  if (n > 0)
    RMOE_CHECK(H5Dwrite(ds.id, mem_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
               "writing dataset '" << dataset << "' to '" << f.path() << "' failed (disk full?): "
                                   << error_stack_text());
}

template <class T>
void read_rows(const File& f, const std::string& dataset, int64_t first, int64_t count, T* out) {
  const Lock lock;
  const std::vector<int64_t> dims = f.shape(dataset);
  RMOE_CHECK(!dims.empty(), "dataset '" << dataset << "' in '" << f.path() << "' is a scalar; it has no rows");
  RMOE_CHECK(first >= 0 && count >= 0 && first + count <= dims[0],
             "rows [" << first << ", " << first + count << ") of '" << dataset << "' in '" << f.path()
                      << "': past its end (" << dims[0] << " rows)");
  if (count == 0) return;
  Handle ds{H5Dopen2(f.id(), dataset.c_str(), H5P_DEFAULT), H5Dclose};
  RMOE_CHECK(ds.id >= 0, "cannot open dataset '" << dataset << "' in '" << f.path() << "': " << error_stack_text());
  std::vector<hsize_t> start(dims.size(), 0), block(dims.begin(), dims.end());
  start[0] = hsize_t(first);
  block[0] = hsize_t(count);
  Handle fsp{H5Dget_space(ds.id), H5Sclose};
  RMOE_H5(H5Sselect_hyperslab(fsp.id, H5S_SELECT_SET, start.data(), nullptr, block.data(), nullptr),
          "selecting rows of '" << dataset << "'");
  Handle msp{H5Screate_simple(int(block.size()), block.data(), nullptr), H5Sclose};
  if (H5Dread(ds.id, mem_type<T>(), msp.id, fsp.id, H5P_DEFAULT, out) < 0) {
    const std::string why = error_stack_text();
    throw_error(__FILE__, __LINE__,
                "reading rows [" + std::to_string(first) + ", " + std::to_string(first + count) + ") of '" +
                    dataset + "' from '" + f.path() + "' failed: " + (why.empty() ? "unknown HDF5 error" : why) +
                    " (the file is corrupt or truncated)");
  }
}

std::vector<std::string> list_datasets(const File& f, const std::string& group) {
  const Lock lock;
  std::vector<std::string> out;
  std::vector<std::string> pending = {group};
  while (!pending.empty()) {
    const std::string g = pending.back();
    pending.pop_back();
    for (const std::string& name : f.list(g)) {
      const std::string path = (g == "/" ? std::string() : g) + "/" + name;
      Handle obj{H5Oopen(f.id(), path.c_str(), H5P_DEFAULT), H5Oclose};
      RMOE_CHECK(obj.id >= 0, "cannot open '" << path << "' in '" << f.path() << "': " << error_stack_text());
      const H5I_type_t type = H5Iget_type(obj.id);
      if (type == H5I_GROUP) pending.push_back(path);
      if (type == H5I_DATASET) out.push_back(path);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void flush(File& f) {
  const Lock lock;
  RMOE_CHECK(H5Fflush(f.id(), H5F_SCOPE_GLOBAL) >= 0,
             "flushing '" << f.path() << "' failed (disk full?): " << error_stack_text());
}

void set_attr_uint64(File& f, const std::string& name, uint64_t v, const std::string& obj) {
  const Lock lock;
  write_attr<uint64_t>(f.id(), f.path(), obj, name, H5T_NATIVE_UINT64, &v);
}

uint64_t attr_uint64(const File& f, const std::string& name, const std::string& obj) {
  const Lock lock;
  Handle a = open_attr(f.id(), f.path(), obj, name);
  uint64_t v = 0;
  RMOE_CHECK(H5Aread(a.id, H5T_NATIVE_UINT64, &v) >= 0,
             "attribute '" << name << "' of '" << f.path() << "' is not an unsigned integer");
  return v;
}

void set_attr_fixed_string(File& f, const std::string& name, const std::string& v, const std::string& obj) {
  const Lock lock;
  const std::string bytes = v.empty() ? std::string(1, '\0') : v;  // HDF5 strings have size >= 1
  Handle t{H5Tcopy(H5T_C_S1), H5Tclose};
  RMOE_H5(H5Tset_size(t.id, bytes.size()), "H5Tset_size for attribute '" << name << "'");
  H5Tset_strpad(t.id, H5T_STR_NULLPAD);
  H5Tset_cset(t.id, H5T_CSET_UTF8);
  write_attr<std::string>(f.id(), f.path(), obj, name, t.id, bytes.data());
}

bool attr_is_variable_length_string(const File& f, const std::string& name, const std::string& obj) {
  const Lock lock;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Handle a = open_attr(f.id(), f.path(), obj, name);
  Handle t{H5Aget_type(a.id), H5Tclose};
  RMOE_CHECK(t.id >= 0, "cannot read the type of attribute '" << name << "' of '" << f.path()
                                                               << "': " << error_stack_text());
  return H5Tget_class(t.id) == H5T_STRING && H5Tis_variable_str(t.id) > 0;
}

#define RMOE_H5_INST_CKPT(T)                                                                                \
  template void write_checksummed<T>(File&, const std::string&, const T*, const std::vector<int64_t>&, int64_t); \
  template void read_rows<T>(const File&, const std::string&, int64_t, int64_t, T*);
RMOE_H5_INST_CKPT(float)
RMOE_H5_INST_CKPT(double)

}  // namespace rmoe::h5
