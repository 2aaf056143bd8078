# Run at install time (install(SCRIPT), see vllm_define_extension in utils.cmake):
# installs ${_vllm_src} into <prefix>/${_vllm_dest} as a copy beside the destination
# renamed over it, so a process importing the extension meanwhile finds the old file
# or the new one, never none or half of one. An identical file is left alone.
set(_vllm_dir "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${_vllm_dest}")
get_filename_component(_vllm_leaf "${_vllm_src}" NAME)
set(_vllm_to "${_vllm_dir}/${_vllm_leaf}")
list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${_vllm_to}")
file(MAKE_DIRECTORY "${_vllm_dir}")
set(_vllm_same FALSE)
if(EXISTS "${_vllm_to}")
  file(SHA256 "${_vllm_src}" _vllm_new)
  file(SHA256 "${_vllm_to}" _vllm_old)
  if(_vllm_new STREQUAL _vllm_old)
    set(_vllm_same TRUE)
  endif()
endif()
if(_vllm_same)
  message(STATUS "Up-to-date: ${_vllm_to}")
else()
  message(STATUS "Installing: ${_vllm_to}")
  file(COPY_FILE "${_vllm_src}" "${_vllm_to}.installing")
  file(RENAME "${_vllm_to}.installing" "${_vllm_to}")
endif()
