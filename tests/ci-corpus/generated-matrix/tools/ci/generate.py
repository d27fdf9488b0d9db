# Writes .gitlab-ci.yml: one build job and one test job per configuration of matrix.toml (kept inline here).
configs = [
  # name, image, cc, cxx, build_type, extra vars, tags, rules, test_allow_failure
  ("linux-gcc-12-release", "gcc:12", "gcc", "g++", "Release", {}, None, None, False),
  ("linux-gcc-13-debug", "gcc:13", "gcc", "g++", "Debug", {}, None, None, False),
  ("linux-gcc-13-release", "gcc:13", "gcc", "g++", "Release", {}, None, None, False),
  ("linux-clang-18-asan", "silkeh/clang:18", "clang", "clang++", "Debug", {"SANITIZER": "address,undefined"}, None, None, False),
  ("alpine-gcc-13-release", "alpine:3.20", "gcc", "g++", "Release", {"APK_PACKAGES": "build-base cmake samurai ccache"}, None, None, False),
  ("windows-msvc-2022-release", None, "cl", "cl", "Release", {"CMAKE_GENERATOR": "Visual Studio 17 2022"}, ["saas-windows-medium-amd64"], None, True),
  ("macos-clang-15-release", "macos-14-xcode-15", "clang", "clang++", "Release", {}, ["saas-macos-medium-m1"], "default-branch", False),
]
out = []
w = out.append
w("# A C++ geometry library's CI, written by its generator script (tools/ci/generate.py) from matrix.toml.")
w("# DO NOT EDIT: run `python3 tools/ci/generate.py > .gitlab-ci.yml` after changing tools/ci/matrix.toml.")
w("# generator: 2.3.1")
w("")
w("stages:")
for s in ["check", "build", "test", "package"]:
    w(f"  - {s}")
w("")
w("variables:")
w("  CMAKE_GENERATOR: Ninja")
w('  CTEST_OUTPUT_ON_FAILURE: "1"')
w('  CCACHE_DIR: "$CI_PROJECT_DIR/.ccache"')
w('  CCACHE_MAXSIZE: "500M"')
w("")
w("format:")
w("  stage: check")
w("  image: silkeh/clang:18")
w("  script:")
w("    - git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror")
w("")
w("generated-file-is-current:")
w("  stage: check")
w("  image: python:3.12-alpine")
w("  script:")
w("    - python3 tools/ci/generate.py > /tmp/expected.yml")
w("    - diff -u .gitlab-ci.yml /tmp/expected.yml")
w("")
w("sanity:")
w("  stage: check")
w("  image: silkeh/clang:18")
w("  parallel:")
w("    matrix:")
w("      - CXX_STANDARD: [\"17\", \"20\", \"23\"]")
w("        TOOLCHAIN: [gcc, clang]")
w("  script:")
w("    - cmake -S . -B build -DCMAKE_CXX_STANDARD=$CXX_STANDARD -DCMAKE_TOOLCHAIN_FILE=cmake/$TOOLCHAIN.cmake -DGEO_BUILD_TESTS=OFF")
w("    - cmake --build build --target geo")
w("")
def head(job, stage, image, tags):
    """A job's first lines: its name, stage, image and runner tags."""
    w(f"{job}:")
    w(f"  stage: {stage}")
    if image:
        w(f"  image: {image}")
    if tags:
        w("  tags:")
        for t in tags:
            w(f"    - {t}")


for (name, image, cc, cxx, bt, extra, tags, rules, taf) in configs:
    windows = name.startswith("windows")
    head(f"build:{name}", "build", image, tags)
    w("  variables:")
    w(f"    CONFIG_NAME: {name}")
    w(f"    CC: {cc}")
    w(f"    CXX: {cxx}")
    w(f"    BUILD_TYPE: {bt}")
    for k, v in extra.items():
        w(f'    {k}: "{v}"')
    if name.startswith("alpine"):
        w("  before_script:")
        w("    - apk add --no-cache $APK_PACKAGES")
    w("  cache:")
    w(f"    key: ccache-{name}")
    w("    paths:")
    w("      - .ccache/")
    w("  script:")
    if windows:
        w('    - cmake -S . -B build -G "$CMAKE_GENERATOR" -A x64')
        w("    - cmake --build build --config $BUILD_TYPE --parallel")
    else:
        san = ' -DGEO_SANITIZE="$SANITIZER"' if "SANITIZER" in extra else ""
        w(f"    - cmake -S . -B build -DCMAKE_BUILD_TYPE=$BUILD_TYPE -DCMAKE_CXX_COMPILER_LAUNCHER=ccache{san}")
        w("    - cmake --build build --parallel")
    w("  artifacts:")
    w(f"    name: build-{name}")
    w("    paths:")
    w("      - build/")
    w("    expire_in: 1 day")
    if rules == "default-branch":
        w("  rules:")
        w("    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH")
        w("    - when: manual")
        w("      allow_failure: true")
    w("")
    head(f"test:{name}", "test", image, tags)
    w(f"  needs: [\"build:{name}\"]")
    w("  variables:")
    w(f"    CONFIG_NAME: {name}")
    if "SANITIZER" in extra:
        w('    ASAN_OPTIONS: "detect_leaks=1:abort_on_error=1"')
        w('    UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1"')
    if name.startswith("alpine"):
        w("  before_script:")
        w("    - apk add --no-cache cmake samurai")
    w("  script:")
    if windows:
        w("    - ctest --test-dir build -C Release --output-junit junit.xml")
    else:
        w("    - ctest --test-dir build --parallel 4 --output-junit junit.xml")
    w("  artifacts:")
    w("    when: always")
    w("    reports:")
    w("      junit: build/junit.xml")
    if taf:
        w("  allow_failure: true")
    if rules == "default-branch":
        w("  rules:")
        w("    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH")
    w("")
rel = [c[0] for c in configs if c[4] == "Release" and not c[0].startswith(("windows", "macos"))]
w("package:source:")
w("  stage: package")
w("  image: alpine:3.20")
w("  needs: []")
w("  script:")
w("    - apk add --no-cache git xz")
w('    - git archive --format=tar --prefix="geo-$CI_COMMIT_SHORT_SHA/" HEAD | xz > geo-src.tar.xz')
w("  artifacts:")
w("    paths: [geo-src.tar.xz]")
w("")
w("package:linux:")
w("  stage: package")
w("  image: gcc:13")
w("  needs:")
for r in rel:
    w(f"    - build:{r}")
w("  script:")
w("    - cmake --install build --prefix dist/geo")
w("    - tar -C dist -czf geo-linux-x86_64.tar.gz geo")
w("  artifacts:")
w("    paths: [geo-linux-x86_64.tar.gz]")
w("  rules:")
w("    - if: $CI_COMMIT_TAG")
w("    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH")
w("      when: manual")
print("\n".join(out))
