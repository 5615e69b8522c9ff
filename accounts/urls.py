from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("signup", views.signup, name="signup"),
    path("signup/sent", views.signup_sent, name="signup_sent"),
    path("signup/resend", views.verification_resend, name="verification_resend"),
    path("verify/<str:token>", views.verify, name="verify"),
    path("login", views.login_email, name="login"),
    path("login/code", views.login_code, name="login_code"),
    path("logout", views.logout_view, name="logout"),
    path("account", views.account, name="account"),
]
