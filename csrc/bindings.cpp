// Python bindings of the C++ extension vkd_fast._C (bindings only: the code lives beside).
#include "activation_cache.h"
#include "feature_distill.h"
#include "host_pool.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "vkd_fast C++ extension: fused CPU feature-distillation loss, activation cache store";
  m.def("feature_distill_fwd", &vkd_fast::feature_distill_fwd_cpu,
        "Fused feature-distillation loss and student gradient (CPU)", pybind11::arg("student"),
        pybind11::arg("target"), pybind11::arg("target_index"), pybind11::arg("student_index"),
        pybind11::arg("weight"), pybind11::arg("metric"), pybind11::arg("reduction"),
        pybind11::arg("eps"), pybind11::arg("grad_out") = pybind11::none(),
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("pool_stats", &vkd_fast::pool_stats,
        "Host buffer pool: (free bytes, free blocks, live bytes, hits, misses)");
  m.def("pool_trim", &vkd_fast::pool_trim, "Return the host buffer pool's free blocks to the OS");
  namespace py = pybind11;
  using vkd_fast::CacheStore;
  py::class_<CacheStore>(m, "CacheStore", "Host store of vkd_fast.ActivationCache (C++ backend)")
      .def(py::init<at::ScalarType, int64_t, std::string, bool, int64_t>(), py::arg("dtype"),
           py::arg("capacity_bytes"), py::arg("spill_dir"), py::arg("pinned"), py::arg("slab_bytes"))
      .def("put_batch", &CacheStore::put_batch, py::call_guard<py::gil_scoped_release>())
      .def("gather", &CacheStore::gather, py::arg("keys"), py::arg("out") = py::none(),
           py::call_guard<py::gil_scoped_release>())
      .def("adopt", &CacheStore::adopt, py::call_guard<py::gil_scoped_release>())
      .def("view", &CacheStore::view)
      .def("contains", &CacheStore::contains)
      .def("rows", &CacheStore::rows)
      .def("keys", &CacheStore::keys)
      .def("dim", &CacheStore::dim)
      .def("stats", &CacheStore::stats);
  m.def("openmp_threads", []() { return at::get_num_threads(); },
        "Threads ATen's parallel_for uses (the fused kernel's parallelism)");
}
