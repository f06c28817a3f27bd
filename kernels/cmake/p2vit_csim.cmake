# The C-sim module's build, included by the repository's CMakeLists.txt and by the packaged copy
# under kernels/cmake (non-editable installs): one set of rules for both. See CMakeLists.txt for
# the options.
set(P2VIT_HLS_DIR "" CACHE PATH "generated HLS sources (codegen's <out>/hls)")
set(P2VIT_MODULE "" CACHE STRING "Python module name (unique per build)")
set(P2VIT_TYPES "native" CACHE STRING "native: native integers (fast C-sim); counters: native + loop counters; ap_int: Xilinx ap_int types")
set(P2VIT_AP_TYPES "" CACHE PATH "directory with ap_int.h and hls_stream.h (ap_int builds)")
# the folder that holds p2vit/*.h: kernels/ in the repository, codegen/kernels/ when packaged
get_filename_component(P2VIT_KERNELS_DEFAULT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(P2VIT_KERNELS "${P2VIT_KERNELS_DEFAULT}" CACHE PATH "p2vit kernel headers (codegen passes it)")
set(P2VIT_SANITIZE "" CACHE STRING "-fsanitize= list for a checking build, e.g. address,undefined (adds -O1 -g)")
option(P2VIT_TESTBENCH "also build the C testbench hls/tb_main.cpp as <out>/csim/p2vit_tb" OFF)
if(NOT P2VIT_HLS_DIR OR NOT P2VIT_MODULE)
  message(FATAL_ERROR "set P2VIT_HLS_DIR and P2VIT_MODULE (codegen does this)")
endif()

find_package(Python COMPONENTS Interpreter Development.Module REQUIRED)
find_package(pybind11 CONFIG REQUIRED)

pybind11_add_module(${P2VIT_MODULE} MODULE NO_EXTRAS ${P2VIT_HLS_DIR}/bindings.cpp ${P2VIT_HLS_DIR}/p2vit_top.cpp)
set(P2VIT_TARGETS ${P2VIT_MODULE})
if(P2VIT_TESTBENCH)
  add_executable(p2vit_tb ${P2VIT_HLS_DIR}/tb_main.cpp ${P2VIT_HLS_DIR}/p2vit_top.cpp)
  set_target_properties(p2vit_tb PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/..)
  list(APPEND P2VIT_TARGETS p2vit_tb)
endif()
foreach(t IN LISTS P2VIT_TARGETS)
  target_include_directories(${t} PRIVATE ${P2VIT_HLS_DIR} ${P2VIT_KERNELS})
  target_compile_features(${t} PRIVATE cxx_std_17)
  # -Wno-unused-label: every loop carries a label for Vitis HLS reports (UG1399), used only there
  target_compile_options(${t} PRIVATE -O3 -march=native -Wall -Wextra -Werror -Wno-unused-label)
  if(P2VIT_TYPES STREQUAL "native")
    target_compile_definitions(${t} PRIVATE P2VIT_NATIVE_TYPES)
  elseif(P2VIT_TYPES STREQUAL "counters")
    # native types plus P2VIT_COUNT loop counters (codegen/perf.py checks its model against them)
    target_compile_definitions(${t} PRIVATE P2VIT_NATIVE_TYPES P2VIT_COUNTERS)
  else()
    if(NOT P2VIT_AP_TYPES)
      message(FATAL_ERROR "ap_int builds need P2VIT_AP_TYPES (hls4ml's ap_types or $XILINX_HLS/include)")
    endif()
    target_include_directories(${t} SYSTEM PRIVATE ${P2VIT_AP_TYPES})
  endif()
  if(P2VIT_SANITIZE)
    # after -O3 so that -O1 wins; frame pointers and -g give readable sanitizer reports
    target_compile_options(${t} PRIVATE -fsanitize=${P2VIT_SANITIZE} -fno-omit-frame-pointer -g -O1)
    target_link_options(${t} PRIVATE -fsanitize=${P2VIT_SANITIZE})
  endif()
endforeach()
# The bindings are glue (argument checks, byte-to-beat copies, the trace collector) around the
# p2vit_top call: at -O1 they compile in a quarter to a half less time than at -O3 (pybind11's
# templates dominate the build) and the C-sim runs as fast, since all its work is in p2vit_top.cpp;
# only copying the blob into beats at load is slower (a DeiT-B blob: ~0.1 s native, ~3 s more in
# ap_int builds). A source's options follow the target's on the command line, so this -O1 is the
# one GCC uses. An inline function both objects emit out of line is linked once, maybe from the -O1
# object: today they share only cold ones (registry destructors, string concatenation; nm).
set_source_files_properties(${P2VIT_HLS_DIR}/bindings.cpp PROPERTIES COMPILE_OPTIONS "-O1")
set_target_properties(${P2VIT_MODULE} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/..)
