// h5.h — a thin RAII layer over the HDF5 C API for datasets and attributes.
//
// Every failing call throws rmoe::Error naming the call, the file and the
// object path. Used by golden-file tests, data shards and checkpoints.
//
// Threads. Every function and method here holds one process-wide (recursive)
// mutex while it is inside HDF5, so no two threads are ever in the library at
// once, whether or not it was built thread-safe (H5is_library_threadsafe:
// Debian 12's libhdf5 1.10.8 is, other builds are not). So Files may be used
// from any thread, and concurrent use is serialised: the loader's prefetch
// threads read shards while the training thread reads others or writes a
// checkpoint. Code that calls the HDF5 C API itself while other threads may
// be in HDF5, or whose several calls must be one step — a failed call and
// error_stack_text(), since a library that is not thread-safe has one error
// stack for all threads — holds an h5::Lock around them.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rmoe::h5 {

// Holds the process-wide HDF5 mutex (see the file comment) for its lifetime;
// may be nested, also around calls of this wrapper.
class Lock {
 public:
  Lock();
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
};

// True if `path` is a readable HDF5 file (H5Fis_hdf5).
bool is_hdf5_file(const std::string& path);

// Closing HDF5 before the process exits. HDF5 1.10 cannot close a file whose
// last write fails (a full disk): H5Fclose frees the file but keeps its id,
// and closing the library afterwards (H5close, or HDF5's own exit handler)
// closes that id again and crashes (HDFFV-11052, fixed in HDF5 1.14.1). The
// wrapper counts every close HDF5 refuses (File, datasets, attributes, ...);
// close_library() then declines, and the caller ends the process without
// running exit handlers (std::_Exit), which the apps' main does
// (src/apps/app_main.h). Tested by tests/cli/mpi_rank_failure.sh (a save
// that hits a file size limit) and tests/test_data.cpp (a shard that does).
//
// Closes every HDF5 object still open and the library itself (H5close), and
// returns true, unless HDF5 failed to close something in this process (then
// it does nothing and returns false: see above). Call it when no thread uses
// HDF5 any more; a later call into HDF5 starts the library again.
bool close_library();
// How many closes HDF5 has refused in this process (0 when all went well).
int failed_closes();

class File {
 public:
  // truncate_checksummed: like truncate, but in the HDF5 1.8+ file format,
  // whose superblock and object headers carry checksums (bit flips in the
  // file's metadata are detected on open). Readable by HDF5 >= 1.10 tools.
  enum Mode { readonly, truncate, truncate_checksummed };
  File(const std::string& path, Mode mode);
  ~File();  // closes the file if close() did not; a failure is only counted (failed_closes)
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  hid_t id() const { return id_; }
  const std::string& path() const { return path_; }
  // Closes the file now, writing what HDF5 still holds, and throws naming the
  // file and HDF5's reason when that fails (e.g. a full disk): a writer calls
  // it before it trusts the file, since the destructor cannot report. After
  // close() (failed or not) the File holds nothing and may only be destroyed.
  void close();

  bool exists(const std::string& obj) const;  // dataset or group, nested paths ok
  std::vector<int64_t> shape(const std::string& dataset) const;
  // Reads a dataset converted to T (float, double, int32_t, int64_t, uint16_t, uint32_t, uint8_t).
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

  // ---- additions for data shards (data/shard.h) ------------------------------
  bool has_attr(const std::string& name, const std::string& obj = "/") const;
  // Names of the members (datasets, groups) of a group, sorted.
  std::vector<std::string> list(const std::string& group = "/") const;

  // What a dataset holds and how it is stored.
  struct DatasetInfo {
    std::vector<int64_t> shape;
    bool is_integer = false;  // integer element type (else float, string, ...)
    bool is_signed = false;
    int64_t element_bytes = 0;
    int64_t chunk = 0;        // elements per chunk along axis 0 (0: not chunked)
    bool fletcher32 = false;  // Fletcher32 checksum filter present
    // Chunked, and its chunk index carries checksums (the HDF5 1.10 indexes,
    // see use_checksummed_chunk_indexes), not the 1.8 format's version-1
    // B-tree, whose damaged chunk sizes HDF5 trusts (finding F2).
    bool checksummed_chunk_index = false;
  };
  DatasetInfo info(const std::string& dataset) const;

  // A growable 1-D dataset of element type T (uint8_t, uint16_t, uint32_t,
  // int32_t, int64_t), `chunk` elements per chunk, optionally with the
  // Fletcher32 checksum filter (HDF5 then verifies every chunk it reads).
  template <class T>
  void create_growable_1d(const std::string& dataset, int64_t chunk, bool fletcher32);
  // Appends n elements of T (stored as the dataset's type).
  template <class T>
  void append_1d(const std::string& dataset, const T* data, int64_t n);
  // Elements [offset, offset + n) of a 1-D dataset, converted to T, into out.
  // A failed read (checksum mismatch, truncated file) throws naming the file,
  // the dataset, the range and HDF5's reason.
  template <class T>
  void read_1d(const std::string& dataset, int64_t offset, int64_t n, T* out) const;

 private:
  hid_t id_ = -1;
  std::string path_;
};

// The innermost description on this thread's HDF5 error stack: the root
// cause in HDF5's words (e.g. "data error detected by Fletcher32 checksum",
// "truncated file: eof = ..."); "" if the stack is empty.
std::string error_stack_text();

}  // namespace rmoe::h5

// ===========================================================================
// Additions for checkpoints (train/checkpoint.h): N-D float datasets chunked
// along the leading axis with the Fletcher32 filter, reads of a leading-axis
// range (an expert slice of [E, ...]), recursive listing, flush, uint64
// attributes. Free functions over File; tested by tests/test_checkpoint.cpp.
// ===========================================================================
namespace rmoe::h5 {

// Objects created in `f` from now on use the HDF5 1.10 format, whose chunk
// indexes carry checksums too. Together with File::truncate_checksummed
// (checksummed object headers) and Fletcher32 on the data, a bit flip anywhere
// in a checkpoint's metadata or data is reported on read instead of silently
// returning wrong values. Readable by HDF5 >= 1.10 (h5ls, h5dump, h5py).
void use_checksummed_chunk_indexes(File& f);

// Creates `dataset` (and missing parent groups) of rank >= 1 and writes it,
// chunked with the Fletcher32 checksum filter (HDF5 verifies each chunk it
// reads). Chunks hold at most chunk_bytes and split the leading axes first:
// an expert tensor [E, f, d] whose [f, d] slab exceeds chunk_bytes gets
// chunks [1, rows, d] inside one expert, so reading an expert range touches
// only its own chunks. T: float or double (stored as that type).
template <class T>
void write_checksummed(File& f, const std::string& dataset, const T* data, const std::vector<int64_t>& shape,
                       int64_t chunk_bytes = int64_t(1) << 20);

// Rows [first, first + count) of the leading axis of a dataset of rank >= 1,
// converted to T (float or double), into out: count * (product of the other
// dims) elements. A failed read (Fletcher32 mismatch, truncated file) throws
// naming the file, the dataset, the rows and HDF5's reason.
template <class T>
void read_rows(const File& f, const std::string& dataset, int64_t first, int64_t count, T* out);

// Full paths of every dataset at or below `group`, sorted ("/model/embed/wte", ...).
std::vector<std::string> list_datasets(const File& f, const std::string& group = "/");

// Hands everything HDF5 has buffered to the operating system; throws on
// failure (e.g. disk full). Not durable yet: fsync the file after closing it.
void flush(File& f);

// Unsigned 64-bit attributes (seeds), which int64 attributes cannot hold.
void set_attr_uint64(File& f, const std::string& name, uint64_t v, const std::string& obj = "/");
uint64_t attr_uint64(const File& f, const std::string& name, const std::string& obj = "/");

// A fixed-length (not variable-length) string attribute: its bytes live in the
// object header, which the checksummed format protects. (Variable-length
// strings live in HDF5's global heap, which has no checksum: a flipped bit
// there is read silently, crashes HDF5 1.10 or hangs it forever: finding F1
// of tests/fuzz/README.md.) File::attr_string reads it.
void set_attr_fixed_string(File& f, const std::string& name, const std::string& v, const std::string& obj = "/");
// True if attribute `name` is a variable-length string, found from its type
// alone (the checksummed object header; the global heap is not touched).
// Readers of damaged files ask before File::attr_string, which would read the
// heap. Throws if there is no such attribute.
bool attr_is_variable_length_string(const File& f, const std::string& name, const std::string& obj = "/");

}  // namespace rmoe::h5
