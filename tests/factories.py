"""Factories for the personas of the test suite: an owner, an admin, a member and an outsider."""

import secrets

import factory
from django_otp.oath import TOTP

from accounts.models import Authenticator, RecoveryCode, RecoveryCodeSet, User, recovery_code_hash
from organizations.models import Membership, Organization, Project, Role
from timonier import clock


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    is_active = True

    @factory.post_generation
    def authenticator(obj, create, extracted, **kwargs):
        """Every active user gets a confirmed TOTP device and recovery codes, as after setup."""
        if not create or not obj.is_active:
            return
        obj.set_unusable_password()
        obj.save()
        authenticator = Authenticator(user=obj, name="Authenticator", confirmed=True, tolerance=1)
        authenticator.key_hex = secrets.token_hex(20)
        authenticator.save()
        code_set = RecoveryCodeSet.objects.create(user=obj, name="Recovery codes", confirmed=True)
        RecoveryCode.objects.bulk_create(
            RecoveryCode(code_set=code_set, code_hash=recovery_code_hash(code)) for code in recovery_codes(obj)
        )


def recovery_codes(user: User) -> list[str]:
    """The recovery codes UserFactory gave the user (stored hashed: this is how tests know them)."""
    return [f"rc{user.pk:03d}-{i:05d}" for i in range(10)]


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


def totp_code(user: User, *, offset_steps: int = 0) -> str:
    """The code the user's authenticator shows now (timonier.clock), or `offset_steps` steps away."""
    device = Authenticator.objects.get(user=user, confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, 0)
    totp.time = clock.now().timestamp() + offset_steps * device.step
    return f"{totp.token():06d}"


def totp_code_for_secret(secret_hex: str, *, at: float | None = None) -> str:
    totp = TOTP(bytes.fromhex(secret_hex))
    totp.time = clock.now().timestamp() if at is None else at
    return f"{totp.token():06d}"
