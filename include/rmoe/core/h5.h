// h5.h — a thin RAII layer over the HDF5 C API for datasets and attributes.
//
// Every failing call throws rmoe::Error naming the call, the file and the
// object path. Used by golden-file tests, data shards and checkpoints.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rmoe::h5 {

class File {
 public:
  enum Mode { readonly, truncate };
  File(const std::string& path, Mode mode);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  hid_t id() const { return id_; }
  const std::string& path() const { return path_; }

  bool exists(const std::string& obj) const;  // dataset or group, nested paths ok
  std::vector<int64_t> shape(const std::string& dataset) const;
  // Reads a dataset converted to T (float, double, int32_t, int64_t, uint16_t, uint32_t).
  template <class T>
  std::vector<T> read(const std::string& dataset, std::vector<int64_t>* shape = nullptr) const;
  // Creates a dataset (and any missing parent groups) and writes it.
  template <class T>
  void write(const std::string& dataset, const T* data, const std::vector<int64_t>& shape);

  // Attributes on the root group ("/") or on an object path.
  int64_t attr_int(const std::string& name, const std::string& obj = "/") const;
  double attr_double(const std::string& name, const std::string& obj = "/") const;
  std::string attr_string(const std::string& name, const std::string& obj = "/") const;
  void set_attr(const std::string& name, int64_t v, const std::string& obj = "/");
  void set_attr(const std::string& name, double v, const std::string& obj = "/");
  void set_attr(const std::string& name, const std::string& v, const std::string& obj = "/");

 private:
  hid_t id_ = -1;
  std::string path_;
};

}  // namespace rmoe::h5
