// p2vit/trace.h - optional capture of intermediate tensors in software simulation.
//
// P2VIT_TRACE(name, block, offset, ptr, len) hands len values starting at element `offset`
// of the tensor `name` of block `block` (-1 outside blocks) to the sink installed by the
// C-sim bindings for the current thread. In synthesis (__SYNTHESIS__) it expands to nothing,
// and without a sink it costs one pointer test.
#ifndef P2VIT_TRACE_H
#define P2VIT_TRACE_H

#ifndef __SYNTHESIS__
namespace p2vit {

struct TraceSink {
  virtual void put(const char* name, int block, long offset, long long value) = 0;
  virtual ~TraceSink() = default;
};

inline thread_local TraceSink* trace_sink = nullptr;

template <class T>
inline void trace(const char* name, int block, long offset, const T* v, int len) {
  if (!trace_sink) return;
  for (int i = 0; i < len; ++i) trace_sink->put(name, block, offset + i, (long long)(v[i]));
}

}  // namespace p2vit
#define P2VIT_TRACE(name, block, offset, ptr, len) ::p2vit::trace(name, block, offset, ptr, len)
#define P2VIT_TRACING() (::p2vit::trace_sink != nullptr)
#else
#define P2VIT_TRACE(name, block, offset, ptr, len)
#define P2VIT_TRACING() false
#endif

#endif  // P2VIT_TRACE_H
