# Timonier image: one image for every process (platform, api, worker, scheduler); the command and
# TIMONIER_SERVICE choose which. See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIMONIER_VAR_DIR=/app/var \
    MEDIA_ROOT=/data/media

WORKDIR /app

RUN groupadd --system timonier \
    && useradd --system --gid timonier --home-dir /app --no-create-home timonier

COPY . /app
# Editable, so that settings find templates/ and static/ beside the code in /app (a plain
# `pip install .` would import the copy in site-packages, whose parent has neither).
RUN pip install --upgrade pip \
    && pip install -e . \
    && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && mkdir -p /app/var /data/media \
    && chown -R timonier:timonier /app/var /data

USER timonier

EXPOSE 3010 3030

# The platform UI; docker-compose.yml overrides the command for api, worker and scheduler.
ENV TIMONIER_SERVICE=platform
CMD ["sh", "-c", "exec gunicorn timonier.wsgi --bind 0.0.0.0:${PLATFORM_PORT:-3010} --workers 2 --threads 4 --access-logfile -"]
