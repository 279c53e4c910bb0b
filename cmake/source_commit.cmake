# Writes OUT, a header defining SPEEDRUN_SOURCE_COMMIT: `git describe --always --dirty
# --abbrev=12` of the source tree SRC ("-dirty": built with uncommitted changes), or
# "unknown" where SRC is not a git checkout or git is missing. CMakeLists.txt runs it at
# every build, so the commit is the one built, not the one configured; the file is only
# rewritten when the commit changed, and then only src/core/build_info.cpp recompiles.
#   cmake -DSRC=<source dir> -DOUT=<header> -P cmake/source_commit.cmake
set(commit "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SRC}" describe --always --dirty --abbrev=12
                  OUTPUT_VARIABLE out RESULT_VARIABLE rc ERROR_QUIET
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 0 AND NOT out STREQUAL "")
    set(commit "${out}")
  endif()
endif()
set(text "// Written at build time by cmake/source_commit.cmake.\n#define SPEEDRUN_SOURCE_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
